import { Emitter, type Unsubscribe } from "./emitter.js";
import type { RosterError } from "./errors.js";
import type { UserStatus, WireUserStatus } from "./protocol.js";
import { jsonEqual } from "./util.js";

/** Live status of a watched user. */
export interface WatchedStatus {
  status: UserStatus;
  /**
   * Now (server time at the last report) for an online or away user; when the last
   * session ended for an offline one; `null` for a user never seen.
   */
  lastSeen: Date | null;
  /** Distinct device kinds of the user's live sessions, sorted (`["mobile", "web"]`). */
  devices: readonly string[];
}

/**
 * A watched user's status changed (`status` event). `status` and `previous` are
 * the merged statuses (`online` \| `away` \| `offline`); `lastSeen` and `devices`
 * are the new values, and `entry` / `previousEntry` the whole entries of
 * {@link Watch.statuses} after and before. An event also comes when only the
 * devices, or an offline user's `lastSeen`, changed: then `previous === status`.
 */
export interface WatchStatusChange {
  userId: string;
  status: UserStatus;
  /** `undefined` for the first report of this user. */
  previous: UserStatus | undefined;
  lastSeen: Date | null;
  devices: readonly string[];
  /** The user's whole entry now (`watch.get(userId)`). */
  entry: WatchedStatus;
  /** The entry before, `undefined` for the first report. */
  previousEntry: WatchedStatus | undefined;
}

export interface WatchEvents {
  /** A user's status changed (or was reported for the first time). */
  status: WatchStatusChange;
  /** Any status changed; carries all statuses. */
  change: ReadonlyMap<string, WatchedStatus>;
  error: RosterError;
}

/** What a watch needs from its client. @internal */
export interface WatchHost {
  addWatched(w: Watch, users: string[]): void;
  removeWatched(w: Watch, users: string[]): void;
  cachedStatus(userId: string): WatchedStatus | undefined;
}

export function toWatchedStatus(s: WireUserStatus): WatchedStatus {
  const t = s.lastSeen ? new Date(s.lastSeen) : null;
  return Object.freeze({
    status: s.status,
    lastSeen: t && Number.isFinite(t.getTime()) ? t : null,
    devices: Object.freeze([...(s.devices ?? [])]),
  });
}

/** Statuses of a set of users, from {@link RosterClient.watch}; kept live across reconnects. */
export class Watch extends Emitter<WatchEvents> {
  private _users: string[] = [];
  private _statuses: ReadonlyMap<string, WatchedStatus> = new Map();
  private closed = false;

  /** @internal use {@link RosterClient.watch} */
  constructor(
    private readonly host: WatchHost,
    users: readonly string[],
  ) {
    super();
    this.add(users);
  }

  get users(): readonly string[] {
    return this._users;
  }

  /** Statuses known so far (users appear after the server's first report). */
  get statuses(): ReadonlyMap<string, WatchedStatus> {
    return this._statuses;
  }

  get(userId: string): WatchedStatus | undefined {
    return this._statuses.get(userId);
  }

  /** Users the server has reported as online or away. */
  get online(): string[] {
    return this._users.filter((u) => {
      const s = this._statuses.get(u)?.status;
      return s === "online" || s === "away";
    });
  }

  /** Calls `listener` after every change; for `useSyncExternalStore` with {@link statuses}. */
  subscribe(listener: () => void): Unsubscribe {
    return this.on("change", () => listener());
  }

  add(users: readonly string[]): void {
    if (this.closed) return;
    const fresh = [...new Set(users)].filter((u) => !this._users.includes(u));
    if (fresh.length === 0) return;
    this._users = [...this._users, ...fresh];
    let seeded = false;
    const next = new Map(this._statuses);
    for (const u of fresh) {
      const c = this.host.cachedStatus(u);
      if (c) {
        next.set(u, c);
        seeded = true;
      }
    }
    if (seeded) this._statuses = next;
    this.host.addWatched(this, fresh);
    if (seeded) this.fire("change", this._statuses);
  }

  remove(users: readonly string[]): void {
    if (this.closed) return;
    const gone = [...new Set(users)].filter((u) => this._users.includes(u));
    if (gone.length === 0) return;
    this._users = this._users.filter((u) => !gone.includes(u));
    const next = new Map(this._statuses);
    for (const u of gone) next.delete(u);
    this._statuses = next;
    this.host.removeWatched(this, gone);
    this.fire("change", this._statuses);
  }

  /** Stops watching (`UNWATCH` for users no other watch needs). */
  close(): void {
    if (this.closed) return;
    const users = this._users;
    this._users = [];
    this.closed = true;
    this.host.removeWatched(this, users);
  }

  /** @internal */
  _apply(updates: ReadonlyMap<string, WatchedStatus>): void {
    if (this.closed) return;
    let next: Map<string, WatchedStatus> | null = null;
    const events: WatchStatusChange[] = [];
    for (const [userId, status] of updates) {
      if (!this._users.includes(userId)) continue;
      const previous = this._statuses.get(userId);
      if (previous && jsonEqual(comparable(previous), comparable(status))) continue;
      next ??= new Map(this._statuses);
      next.set(userId, status);
      events.push(
        Object.freeze({
          userId,
          status: status.status,
          previous: previous?.status,
          lastSeen: status.lastSeen,
          devices: status.devices,
          entry: status,
          previousEntry: previous,
        }),
      );
    }
    if (!next) return;
    this._statuses = next;
    for (const e of events) this.fire("status", e);
    this.fire("change", this._statuses);
  }

  /** @internal */
  _error(e: RosterError): void {
    this.fire("error", e);
  }
}

/**
 * For an online user `lastSeen` is the server's clock at each report, so it
 * changes on every report; that alone is not a change worth an event.
 */
function comparable(s: WatchedStatus): unknown {
  return {
    status: s.status,
    devices: s.devices,
    lastSeen: s.status === "offline" ? (s.lastSeen?.getTime() ?? null) : "live",
  };
}
