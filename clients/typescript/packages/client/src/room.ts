import { Emitter, type Unsubscribe } from "./emitter.js";
import { RosterError } from "./errors.js";
import {
  MAX_EVENT_DATA_BYTES,
  MAX_EVENT_NAME_LENGTH,
  type ClientMessage,
  type EntityMessage,
  type EventMessage,
  type EventSender,
  type Json,
  type LockAckMessage,
  type LockEventMessage,
  type LockOwner,
  type LockReleaseReason,
  type PresenceCountMessage,
  type PresenceDiffMessage,
  type PresenceMessage,
  type PresenceState,
  type Ref,
  type RoomMode,
  type UnlockAckMessage,
} from "./protocol.js";
import {
  RosterState,
  type JoinChange,
  type LeaveChange,
  type Member,
  type RosterChange,
  type Session,
  type UpdateChange,
} from "./roster.js";
import { Throttle } from "./throttle.js";
import { jsonEqual } from "./util.js";

/** How a room is addressed: a key (`"Order:123"`) or an entity and id. */
export type RoomAddress = string | { entity: string; id: string | number };

export interface RoomOptions<S extends PresenceState = PresenceState> {
  /** Initial state published with the `SUB` (and on every re-`SUB` after a reconnect). */
  state?: S;
  /** `list` (default): full roster; `count`: only the number of sessions. */
  mode?: RoomMode;
  /** `setState` throttle interval in ms (default: the client's `stateThrottleMs`, 100). */
  throttleMs?: number;
}

/**
 * - `connecting`: waiting for the connection;
 * - `joining`: `SUB` sent, no snapshot yet;
 * - `joined`: in sync;
 * - `resyncing`: after a reconnect or a `seq` gap, waiting for a fresh snapshot (the
 *   last known roster stays readable);
 * - `error`: the server refused the `SUB` (see the `error` event);
 * - `left`: `leave()` was called.
 */
export type RoomStatus = "connecting" | "joining" | "joined" | "resyncing" | "error" | "left";

/** Entity lifecycle state of the room (`ENTITY` events, `PRESENCE`). */
export interface EntityState {
  stale: boolean;
  busyBy: string | null;
  version: number;
}

export interface LockChange {
  field: string;
  /** The new holder, or `null` when released. */
  owner: LockOwner | null;
  previous: LockOwner | null;
  /** Why it was released (`LOCK` event); `null` on acquire or when seen in a snapshot. */
  reason: LockReleaseReason | null;
}

export interface LockResult {
  success: boolean;
  /** On success: this session. On failure: the current holder. */
  owner: LockOwner | null;
  expiresAt: string | null;
}

/** Everything a UI renders, as one immutable value (new object after every change). */
export interface RoomSnapshot<S extends PresenceState = PresenceState> {
  key: string;
  status: RoomStatus;
  mode: RoomMode;
  /** `count` when only a count is available (count mode, or the room is above the list limit). */
  view: RoomMode;
  members: readonly Member<S>[];
  /** Members without this session (a user whose only session is this one is left out). */
  others: readonly Member<S>[];
  /** Number of sessions in the room. */
  count: number;
  locks: ReadonlyMap<string, LockOwner>;
  entity: EntityState;
  /** This session's state as last set locally. */
  myState: S | undefined;
}

/**
 * An ephemeral event another member sent with {@link Room.emit} (`EVENT` on the
 * wire): reactions, "typing…", a ping. Never this session's own; not stored, so a
 * member that joins later does not get the events sent before.
 */
export interface RoomEvent<D = Json> {
  room: string;
  /** The name given to `emit` (1–64 characters). */
  event: string;
  data: D;
  /**
   * The sender: its user and the very session (tab/device) that emitted it;
   * `null` for an event no member sent (the back end's, e.g. a Pusher HTTP API
   * `trigger` on the room's channel).
   */
  from: EventSender | null;
}

export interface RoomEvents<S extends PresenceState = PresenceState> {
  join: JoinChange<S>;
  leave: LeaveChange<S>;
  update: UpdateChange<S>;
  /** The roster changed (also on the first snapshot); carries the members. */
  change: readonly Member<S>[];
  /** A snapshot was applied (first join, after a gap, after a reconnect). */
  synced: readonly Member<S>[];
  lock: LockChange;
  entity: EntityState;
  count: number;
  status: RoomStatus;
  error: RosterError;
  /** Another member's {@link Room.emit}. */
  event: RoomEvent;
  /** Anything in {@link RoomSnapshot} changed. */
  snapshot: RoomSnapshot<S>;
}

/** What a room needs from its client. @internal */
export interface RoomHost {
  readonly sessionId: string | null;
  readonly isOpen: boolean;
  /** The last `WELCOME` resumed the session (the server kept its rooms and locks). */
  readonly resumed: boolean;
  /** How long members missing after a reconnect that could not resume are held. */
  readonly leaveGraceMs: number;
  /** Sends a request expecting a reply, queued until the connection is open. */
  request<T>(msg: ClientMessage, opts?: { queue?: boolean; onRef?: (ref: Ref) => void }): Promise<T>;
  /** Sends a message without a success reply; errors for it go to `onError`. */
  send(msg: ClientMessage, onError?: (e: RosterError) => void): boolean;
  releaseRoom(room: Room<never>): Promise<void>;
}

const NO_ENTITY: EntityState = Object.freeze({ stale: false, busyBy: null, version: 0 });

export function roomKey(address: RoomAddress): string {
  return typeof address === "string" ? address : `${address.entity}:${address.id}`;
}

/** A room joined through {@link RosterClient.room}. */
export class Room<S extends PresenceState = PresenceState> extends Emitter<RoomEvents<S>> {
  readonly key: string;
  readonly mode: RoomMode;
  private readonly roster = new RosterState<S>();
  private _status: RoomStatus = "connecting";
  private _view: RoomMode;
  private _count = 0;
  private _locks: ReadonlyMap<string, LockOwner> = new Map();
  private _entity: EntityState = NO_ENTITY;
  private _state: S | undefined;
  private sentState: S | undefined;
  private subRef: Ref | null = null;
  /** A `PRESENCE` was applied once: later snapshots report changes as events. */
  private everSynced = false;
  /** A `PRESENCE` or `PRESENCE_COUNT` answered once: later `SUB`s are re-joins. */
  private everJoined = false;
  private refs = 1;
  /** Fields this handle acquired with `lock()` and still holds. */
  private readonly held = new Set<string>();
  /** The next snapshot follows a reconnect that could not resume: reconcile it. */
  private reconcile = false;
  /** Ends the hold of members missing after such a reconnect (the leave grace). */
  private holdTimer: ReturnType<typeof setTimeout> | null = null;
  private readonly throttle: Throttle<S>;
  private snap: RoomSnapshot<S> | null = null;
  /** A member with this session left out (in `others`), per member object: kept while the member is. */
  private readonly withoutMe = new WeakMap<Member<S>, { me: string; member: Member<S> | null }>();

  /** @internal use {@link RosterClient.room} */
  constructor(
    private readonly host: RoomHost,
    key: string,
    opts: RoomOptions<S>,
    defaultThrottleMs: number,
  ) {
    super();
    this.key = key;
    this.mode = opts.mode ?? "list";
    this._view = this.mode;
    this._state = opts.state;
    this.throttle = new Throttle<S>((s) => this.deliverState(s), opts.throttleMs ?? defaultThrottleMs);
  }

  // -------------------------------------------------------------------------
  // Reading

  get status(): RoomStatus {
    return this._status;
  }

  /** `count` while only a count is available. */
  get view(): RoomMode {
    return this._view;
  }

  get members(): readonly Member<S>[] {
    return this.roster.members;
  }

  get others(): readonly Member<S>[] {
    return this.snapshot().others;
  }

  /** This session's entry in the roster, once joined. */
  get me(): Session<S> | undefined {
    const sid = this.host.sessionId;
    return sid ? this.roster.session(sid) : undefined;
  }

  /** Number of sessions (from the roster in list mode, from `PRESENCE_COUNT` otherwise). */
  get count(): number {
    return this._count;
  }

  get locks(): ReadonlyMap<string, LockOwner> {
    return this._locks;
  }

  get entity(): EntityState {
    return this._entity;
  }

  get stale(): boolean {
    return this._entity.stale;
  }

  get busyBy(): string | null {
    return this._entity.busyBy;
  }

  get version(): number {
    return this._entity.version;
  }

  /** Seq of the roster (last snapshot or diff applied). */
  get seq(): number | null {
    return this.roster.seq;
  }

  /** The state this session publishes (as last set locally). */
  get state(): S | undefined {
    return this._state;
  }

  /** The holder of `field`, if locked. */
  lockOwner(field: string): LockOwner | undefined {
    return this._locks.get(field);
  }

  /** `field` is locked by this very session (not another tab of the same user). */
  isLockedByMe(field: string): boolean {
    const o = this._locks.get(field);
    return !!o && o.sessionId === this.host.sessionId;
  }

  /** `field` is locked by someone else (another user, or another session of this user). */
  isLockedByOther(field: string): boolean {
    const o = this._locks.get(field);
    return !!o && o.sessionId !== this.host.sessionId;
  }

  /** One immutable value for UIs (`useSyncExternalStore`); same object until something changes. */
  snapshot(): RoomSnapshot<S> {
    if (!this.snap) {
      const me = this.host.sessionId;
      const members = this.roster.members;
      const others = me
        ? members.map((m) => this.otherView(m, me)).filter((m): m is Member<S> => m !== null)
        : members;
      this.snap = Object.freeze({
        key: this.key,
        status: this._status,
        mode: this.mode,
        view: this._view,
        members,
        others: Object.freeze(others),
        count: this._count,
        locks: this._locks,
        entity: this._entity,
        myState: this._state,
      });
    }
    return this.snap;
  }

  /**
   * `m` as the others see it: without this session (`null` when it was the user's
   * only one). The same object for the same member, so that UIs comparing by
   * identity see a member change only when it changed.
   */
  private otherView(m: Member<S>, me: string): Member<S> | null {
    if (!m.sessions.some((s) => s.sessionId === me)) return m;
    const cached = this.withoutMe.get(m);
    if (cached && cached.me === me) return cached.member;
    const member =
      m.sessions.length === 1
        ? null
        : Object.freeze({ ...m, sessions: Object.freeze(m.sessions.filter((s) => s.sessionId !== me)) });
    this.withoutMe.set(m, { me, member });
    return member;
  }

  /** Calls `listener` after every change of {@link snapshot}; returns an unsubscribe function. */
  subscribe(listener: () => void): Unsubscribe {
    return this.on("snapshot", () => listener());
  }

  // -------------------------------------------------------------------------
  // Acting

  /**
   * Replaces this session's state. Throttled (`throttleMs`, default 100 ms): the
   * first call of a burst goes out at once, later ones are coalesced and the last
   * value is sent on the trailing edge. While disconnected only the latest value is
   * kept; it goes out with the re-`SUB`.
   */
  setState(state: S | ((prev: S | undefined) => S)): void {
    this.assertNotLeft();
    const next = typeof state === "function" ? (state as (p: S | undefined) => S)(this._state) : state;
    this._state = next;
    this.changed();
    this.throttle.call(next);
  }

  /**
   * Merges `patch` into this session's state (a shallow merge onto the current
   * state, or onto `{}` when there is none) and publishes the result like
   * {@link setState}: `updateState({cursor})` keeps the other keys. A key set to
   * `undefined` is removed. `patch` may be a function of the current state.
   */
  updateState(patch: Partial<S> | ((prev: S | undefined) => Partial<S>)): void {
    this.assertNotLeft();
    const p = typeof patch === "function" ? (patch as (prev: S | undefined) => Partial<S>)(this._state) : patch;
    this.setState(mergeState(this._state, p));
  }

  /** Sends a state still held back by the throttle now. */
  flushState(): void {
    this.throttle.flush();
  }

  private deliverState(state: S): void {
    if (!this.host.isOpen || this.subRef === null || this._status === "left" || this._status === "error") return;
    if (jsonEqual(state, this.sentState)) return;
    this.sentState = state;
    this.host.send({ type: "STATE", room: this.key, state }, (e) => this.fail(e));
  }

  /**
   * Sends an ephemeral event to the room's other members connected now (`EMIT`):
   * they get it as an `event` (`{room, event, data, from}`); this session does
   * not. Nothing is stored or replayed, and nothing is queued: returns `false`
   * (and sends nothing) while the room is not subscribed on an open connection,
   * `true` once the event is on its way. Errors the server answers with
   * (`forbidden` below role commenter, `rate_limited`, …) come as `error` events
   * with `request: "EMIT"`.
   *
   * Throws a {@link RosterError} at once for what the server would refuse:
   * `invalid_event` for a name that is not 1–64 characters or has control
   * characters, or data that is not JSON; `event_too_large` for data above 2 KiB
   * of JSON; `room_left` after `leave()`.
   *
   * ```ts
   * room.emit("reaction", { emoji: "👍" });
   * room.on("event", ({ event, data, from }) => event === "reaction" && showReaction(from?.userId, data));
   * ```
   */
  emit(event: string, data: unknown = null): boolean {
    this.assertNotLeft();
    const json = validateEvent(this.key, event, data);
    if (!this.host.isOpen || this.subRef === null || this._status === "error") return false;
    return this.host.send({ type: "EMIT", room: this.key, event, data: json }, (e) => this.fail(e));
  }

  /**
   * Acquires (or refreshes) the lock on `field`. Resolves with `success: false` and
   * the holder when someone else has it; rejects with a {@link RosterError} for
   * `forbidden`, `not_subscribed`, a timeout, or a connection lost before the reply.
   */
  async lock(field: string): Promise<LockResult> {
    this.assertNotLeft();
    const ack = await this.host.request<LockAckMessage>({ type: "LOCK", room: this.key, field });
    if (ack.success) this.held.add(field);
    if (ack.owner) this.setLock(field, ack.owner, null);
    return { success: ack.success, owner: ack.owner ?? null, expiresAt: ack.expiresAt ?? null };
  }

  /** Releases this session's lock on `field`; `false` when nothing was locked. */
  async unlock(field: string): Promise<boolean> {
    this.assertNotLeft();
    this.held.delete(field);
    const ack = await this.host.request<UnlockAckMessage>({ type: "UNLOCK", room: this.key, field });
    if (ack.success && this.isLockedByMe(field)) this.setLock(field, null, "released");
    return ack.success;
  }

  /**
   * Releases this handle. Each {@link RosterClient.room} call for the same key
   * returns the same object and must be balanced by one `leave()`; the last one
   * sends `UNSUB` (releasing this session's locks in the room) and resolves once
   * the server acknowledged it (at once when not connected).
   */
  async leave(): Promise<void> {
    if (this._status === "left") return;
    this.refs--;
    if (this.refs > 0) return;
    this.throttle.cancel();
    this.stopHold();
    this.setStatus("left");
    await this.host.releaseRoom(this as unknown as Room<never>);
  }

  // -------------------------------------------------------------------------
  // Driven by the client (internal)

  /** @internal */
  _retain(): void {
    this.refs++;
  }

  /** @internal the connection is (again) welcomed: (re-)SUB. */
  _connected(): void {
    if (this._status === "left") return;
    // A new session (the old one's grace ended, or the server restarted and lost
    // it): the others may be reconnecting too, so nobody missing from the next
    // snapshot is reported gone before the leave grace is over.
    this.reconcile = this.everSynced && !this.host.resumed;
    if (this.everJoined) {
      this.roster.expectSnapshot();
      this.setStatus("resyncing");
    } else {
      this.setStatus("joining");
    }
    this.subscribe_(true);
  }

  /** @internal the connection dropped; diffs until the next snapshot are not trusted. */
  _disconnected(): void {
    if (this._status === "left") return;
    this.subRef = null;
    this.throttle.cancel();
    if (this.everJoined) {
      this.roster.expectSnapshot();
      if (this._status !== "error") this.setStatus("resyncing");
    } else if (this._status !== "error") {
      this.setStatus("connecting");
    }
  }

  /** @internal */
  _onPresence(msg: PresenceMessage): void {
    if (!this.acceptsReply(msg.ref)) return;
    const first = !this.everSynced;
    const reconcile = this.reconcile;
    this.reconcile = false;
    const changes = this.roster.applySnapshot(msg, reconcile);
    this.everSynced = true;
    this.everJoined = true;
    this._view = "list";
    const oldLocks = this._locks;
    this._locks = new Map(Object.entries(msg.locks ?? {}));
    this.applyEntity({ stale: !!msg.stale, busyBy: msg.busyBy ?? null, version: msg.version ?? 0 }, !first);
    this.setStatus("joined", false);
    // Locks this handle held under the lost session and that nobody holds now are
    // taken again (the field is still being edited here).
    const relock = reconcile ? [...this.held].filter((f) => !this._locks.has(f)) : [];
    this.releaseForgottenLocks();
    this.emitChanges(first ? [] : changes, first || changes.length > 0);
    if (!first) {
      for (const field of new Set([...oldLocks.keys(), ...this._locks.keys()])) {
        const a = oldLocks.get(field) ?? null;
        const b = this._locks.get(field) ?? null;
        if (!jsonEqual(a, b)) this.fire("lock", { field, owner: b, previous: a, reason: null });
      }
    }
    this.setCount(this.roster.sessionCount);
    this.fire("synced", this.roster.members);
    this.changed();
    if (reconcile) this.startHold();
    for (const field of relock) this.relock(field);
  }

  /** (Re)starts the leave grace of the members held by the last snapshot. */
  private startHold(): void {
    this.stopHold();
    if (this.roster.heldCount === 0) return;
    this.holdTimer = setTimeout(() => {
      this.holdTimer = null;
      if (this._status === "left") return;
      const changes = this.roster.expireHeld();
      if (changes.length === 0) return;
      this.emitChanges(changes, true);
      this.setCount(this.roster.sessionCount);
      this.changed();
    }, this.host.leaveGraceMs);
  }

  private stopHold(): void {
    if (this.holdTimer) clearTimeout(this.holdTimer);
    this.holdTimer = null;
  }

  private relock(field: string): void {
    this.held.add(field);
    this.lock(field)
      .then((r) => {
        if (!r.success) this.held.delete(field);
      })
      .catch(() => {
        this.held.delete(field);
      });
  }

  /** @internal */
  _onDiff(msg: PresenceDiffMessage): void {
    if (this._status === "left" || this._status === "error" || this._view === "count") return;
    const out = this.roster.applyDiff(msg);
    if (out.kind === "gap") {
      // Rule 2: re-SUB, no UNSUB, no state: a fresh PRESENCE and nobody sees a diff.
      this.setStatus("resyncing");
      this.subscribe_(false);
      return;
    }
    if (out.kind !== "applied") return;
    if (out.changes.length > 0) {
      this.emitChanges(out.changes, true);
      this.setCount(this.roster.sessionCount);
      this.changed();
    }
  }

  /** @internal */
  _onCount(msg: PresenceCountMessage): void {
    if (!this.acceptsReply(msg.ref)) return;
    if (this._view !== "count") {
      // Count mode, or above the list limit: the roster is not kept meanwhile.
      this._view = "count";
      this.roster.expectSnapshot();
    }
    this.everJoined = true;
    this.setStatus("joined", false);
    this.setCount(msg.count);
    this.changed();
  }

  /** @internal */
  _onLock(msg: LockEventMessage): void {
    if (this._status === "left") return;
    this.setLock(msg.field, msg.owner ?? null, msg.owner ? null : (msg.reason ?? "released"));
  }

  /** @internal */
  _onEntity(msg: EntityMessage): void {
    if (this._status === "left") return;
    this.applyEntity({ stale: !!msg.stale, busyBy: msg.busyBy ?? null, version: msg.version ?? 0 }, true);
    this.changed();
  }

  /** @internal another member's `EMIT`. */
  _onEvent(msg: EventMessage): void {
    if (this._status === "left") return;
    if (typeof msg.event !== "string") return;
    const from = msg.from ?? null;
    if (from !== null && (typeof from !== "object" || typeof from.userId !== "string")) return;
    this.fire(
      "event",
      Object.freeze({
        room: this.key,
        event: msg.event,
        data: msg.data === undefined ? null : msg.data,
        from: from && Object.freeze({ userId: from.userId, sessionId: from.sessionId }),
      }),
    );
  }

  // -------------------------------------------------------------------------

  private subscribe_(withState: boolean): void {
    const msg: ClientMessage = { type: "SUB", room: this.key };
    if (withState) {
      if (this._state !== undefined) msg.state = this._state;
      if (this.mode !== "list") msg.mode = this.mode;
      this.sentState = this._state;
      this.throttle.cancel();
    } else if (this.mode !== "list") {
      msg.mode = this.mode;
    }
    this.host
      .request<PresenceMessage | PresenceCountMessage>(msg, {
        queue: false,
        onRef: (ref) => {
          this.subRef = ref;
        },
      })
      .catch((e: unknown) => {
        const err = e instanceof RosterError ? e : new RosterError("protocol", String(e));
        // A connection lost before the reply: the next WELCOME re-SUBs.
        if (err.code === "connection_closed" || err.code === "client_closed") return;
        this.fail(err);
      });
  }

  /**
   * Locks held by this session that this handle never acquired, or whose `lock()`
   * reply was lost with a connection: after a page reload that resumed the session,
   * or a request that ran although its reply never arrived. Nobody here is editing
   * those fields, so they are released instead of blocking others until the TTL.
   */
  private releaseForgottenLocks(): void {
    const me = this.host.sessionId;
    if (!me) return;
    for (const field of [...this.held]) {
      if (this._locks.get(field)?.sessionId !== me) this.held.delete(field);
    }
    for (const [field, owner] of this._locks) {
      if (owner.sessionId === me && !this.held.has(field)) {
        this.host.send({ type: "UNLOCK", room: this.key, field }, () => {
          /* already released: nothing to do */
        });
      }
    }
  }

  private acceptsReply(ref: Ref | undefined): boolean {
    if (this._status === "left") return false;
    // A reply to an older SUB of this key (e.g. before leave() + room()) is not ours.
    return ref === undefined || ref === this.subRef;
  }

  private fail(err: RosterError): void {
    if (this._status === "left") return;
    if (err.request === "SUB") this.setStatus("error");
    this.fire("error", err);
  }

  private setLock(field: string, owner: LockOwner | null, reason: LockReleaseReason | null): void {
    if (!owner || owner.sessionId !== this.host.sessionId) this.held.delete(field);
    const previous = this._locks.get(field) ?? null;
    if (jsonEqual(previous, owner)) return;
    const next = new Map(this._locks);
    if (owner) next.set(field, owner);
    else next.delete(field);
    this._locks = next;
    this.fire("lock", { field, owner, previous, reason });
    this.changed();
  }

  private applyEntity(e: EntityState, emit: boolean): void {
    if (jsonEqual(e, this._entity)) return;
    this._entity = Object.freeze(e);
    if (emit) this.fire("entity", this._entity);
  }

  private setCount(n: number): void {
    if (n === this._count) return;
    this._count = n;
    this.fire("count", n);
  }

  private setStatus(s: RoomStatus, notify = true): void {
    if (s === this._status) return;
    this._status = s;
    this.fire("status", s);
    if (notify) this.changed();
  }

  private emitChanges(changes: RosterChange<S>[], rosterChanged: boolean): void {
    for (const c of changes) {
      if (c.type === "join") this.fire("join", c);
      else if (c.type === "leave") this.fire("leave", c);
      else this.fire("update", c);
    }
    if (rosterChanged) {
      this.snap = null;
      this.fire("change", this.roster.members);
    }
  }

  private changed(): void {
    this.snap = null;
    this.fire("snapshot", this.snapshot());
  }

  private assertNotLeft(): void {
    if (this._status === "left") {
      throw new RosterError("room_left", `room ${this.key} was left; call client.room() again`, { room: this.key });
    }
  }
}

/** `patch` shallowly merged onto `prev`; keys set to `undefined` are removed. */
function mergeState<S extends PresenceState>(prev: S | undefined, patch: Partial<S>): S {
  const next: Record<string, unknown> = { ...(prev ?? {}) };
  for (const [k, v] of Object.entries(patch)) {
    if (v === undefined) delete next[k];
    else next[k] = v;
  }
  return next as S;
}

// eslint-disable-next-line no-control-regex -- control characters are what it finds
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

/** Checks an `EMIT` as the server would; returns `data` as the JSON value to send. */
function validateEvent(room: string, event: unknown, data: unknown): Json {
  const fail = (code: "invalid_event" | "event_too_large", message: string): never => {
    throw new RosterError(code, message, { request: "EMIT", room });
  };
  if (typeof event !== "string") return fail("invalid_event", "room.emit(): the event name must be a string");
  const chars = [...event].length;
  if (chars < 1 || chars > MAX_EVENT_NAME_LENGTH) {
    return fail(
      "invalid_event",
      `room.emit(): the event name must be 1-${MAX_EVENT_NAME_LENGTH} characters, got ${chars}`,
    );
  }
  if (CONTROL.test(event)) return fail("invalid_event", "room.emit(): the event name must not contain control characters");
  let text: string | undefined;
  try {
    text = JSON.stringify(data);
  } catch (e) {
    return fail("invalid_event", `room.emit(${JSON.stringify(event)}): data is not JSON (${String(e)})`);
  }
  if (text === undefined) {
    return fail("invalid_event", `room.emit(${JSON.stringify(event)}): data is not JSON (${typeof data})`);
  }
  const bytes = utf8Length(text);
  if (bytes > MAX_EVENT_DATA_BYTES) {
    return fail(
      "event_too_large",
      `room.emit(${JSON.stringify(event)}): data is ${bytes} bytes of JSON; at most ${MAX_EVENT_DATA_BYTES} allowed`,
    );
  }
  // What goes on the wire: toJSON() and dropped keys applied, as the server will see it.
  return JSON.parse(text) as Json;
}

function utf8Length(s: string): number {
  const enc = (globalThis as { TextEncoder?: new () => { encode(s: string): Uint8Array } }).TextEncoder;
  if (enc) return new enc().encode(s).length;
  let n = 0;
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    n += c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
  }
  return n;
}
