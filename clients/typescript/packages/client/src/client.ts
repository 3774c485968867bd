import { ActivityTracker, type ActivityTrackerOptions } from "./activity.js";
import { Backoff, type ReconnectOptions } from "./backoff.js";
import { stableClientId, storeClientId, defaultSessionStorage, type StorageLike, DEFAULT_CLIENT_ID_KEY } from "./clientId.js";
import { Emitter } from "./emitter.js";
import { CloseCode, RosterError, isServerErrorCode, type RosterErrorCode } from "./errors.js";
import {
  ROOM_KEY_PATTERN,
  type ClientMessage,
  type ErrorMessage,
  type HbAckMessage,
  type PresenceState,
  type Ref,
  type ServerMessage,
  type WelcomeMessage,
} from "./protocol.js";
import { Room, roomKey, type RoomAddress, type RoomHost, type RoomOptions } from "./room.js";
import { deferred, monotonicNow, randomId } from "./util.js";
import { Watch, toWatchedStatus, type WatchHost, type WatchedStatus } from "./watch.js";

/** The part of the WebSocket API the client uses (the browser's, or the `ws` package's). */
export interface WebSocketLike {
  readonly readyState: number;
  /* eslint-disable @typescript-eslint/no-explicit-any -- event types differ between implementations */
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: any) => void) | null;
  onclose: ((ev: any) => void) | null;
  onerror: ((ev: any) => void) | null;
  /* eslint-enable @typescript-eslint/no-explicit-any */
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

export type TokenProvider = () => string | Promise<string>;

export interface HeartbeatOptions {
  /**
   * Derive `HB.active` from user activity (pointer, keyboard, wheel, touch, scroll,
   * focus, visibility). Default `true`; it only has an effect where `document`
   * exists. `false`: always active unless {@link RosterClient.setActive} says
   * otherwise. An object passes a custom document/window (tests, iframes).
   */
  activity?: boolean | ActivityTrackerOptions;
  /** Override the interval the server announces in `WELCOME` (ms). */
  intervalMs?: number;
}

export interface RosterClientOptions {
  /** `ws(s)://host:port/ws`; `http(s)` is turned into `ws(s)`, and a bare origin gets `/ws`. */
  url: string;
  /** A fixed JWT. */
  token?: string;
  /** Called before every connection attempt (also after `auth_failed`); may be async. */
  getToken?: TokenProvider;
  /** `HELLO.device` (`web`, `mobile`, …); the server derives it from the User-Agent when absent. */
  device?: string;
  /** `HELLO.os`. */
  os?: string;
  /** `HELLO.appVersion`. */
  appVersion?: string;
  /**
   * Resumes a session across reconnects and reloads. Default: one id per tab, kept
   * in `sessionStorage` (a fresh id per client where there is none).
   */
  clientId?: string;
  /** Where the generated client id is kept (default `sessionStorage`; `null` = nowhere). */
  clientIdStorage?: StorageLike | null;
  /** Storage key of the client id (default `roster:clientId`). */
  clientIdKey?: string;
  /** WebSocket implementation; default `globalThis.WebSocket` (pass `ws`'s in Node < 22). */
  WebSocket?: WebSocketConstructor;
  /** Back-off policy, or `false` to never reconnect. */
  reconnect?: ReconnectOptions | false;
  heartbeat?: HeartbeatOptions;
  /** Timeout of every request (`SUB`, `LOCK`, `WATCH`, …) in ms. Default 10 000. */
  requestTimeoutMs?: number;
  /** Default `setState` throttle of rooms in ms. Default 100. */
  stateThrottleMs?: number;
  /**
   * After a resumed `WELCOME`, rooms the session is still in but that this client
   * has not opened (a reloaded page that no longer shows them) are left after this
   * many ms. Default 5 000.
   */
  orphanRoomGraceMs?: number;
  /**
   * After a reconnect that could not resume (`WELCOME` with `resumed:false`, e.g. a
   * server restart), members missing from a room's fresh snapshot are held this
   * long before they are reported gone, so a restart shows no leave and no join.
   * The server's `WELCOME.leaveGraceMs` wins when it sends one. Default 5 000.
   */
  leaveGraceMs?: number;
  /** Random source for the back-off jitter (tests). */
  random?: () => number;
}

/**
 * - `idle`: never connected;
 * - `connecting`: the first connection is being opened;
 * - `open`: welcomed;
 * - `reconnecting`: the connection was lost (or the first attempt failed); waiting
 *   for the back-off delay or opening a new socket;
 * - `closed`: for good: `disconnect()`, kicked, reconnect budget spent, or a
 *   fixed token was refused.
 */
export type ConnectionState = "idle" | "connecting" | "open" | "reconnecting" | "closed";

export interface StateChange {
  state: ConnectionState;
  previous: ConnectionState;
}

export interface ConnectingEvent {
  /** 0 for the first attempt after `connect()` or after a successful connection. */
  attempt: number;
}

export interface ReconnectingEvent {
  /** 1-based attempt about to be made. */
  attempt: number;
  delayMs: number;
  /** Close code of the lost connection, when there was one. */
  code?: number;
  reason?: string;
}

export interface ClosedEvent {
  code?: number;
  reason: string;
  /** Why the client gave up, when it was not `disconnect()`. */
  error?: RosterError;
}

export interface ClientEvents {
  state: StateChange;
  connecting: ConnectingEvent;
  open: WelcomeMessage;
  reconnecting: ReconnectingEvent;
  closed: ClosedEvent;
  /** The server ended this session (close 4011): no reconnect. */
  kicked: { code: number; reason: string };
  /** Another connection resumed this client id (close 4012); the client continues with a new id. */
  replaced: { code: number; reason: string; newClientId: string };
  /** Errors not tied to a request the application awaits (auth failures, rate limiting, …). */
  error: RosterError;
  /** New rolling average round-trip time in ms. */
  latency: number;
}

interface Pending {
  ref: Ref;
  msg: ClientMessage;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
  timer: ReturnType<typeof setTimeout> | null;
  /** Connection it was written to; `null` while queued. */
  conn: number | null;
  queued: boolean;
}

interface FireAndForget {
  msg: ClientMessage;
  onError?: (e: RosterError) => void;
}

const OPEN = 1;
const LATENCY_SAMPLES = 5;
const MAX_FIRE_REFS = 256;
const WATCH_CHUNK = 1000;
const WAKE_MIN_GAP_MS = 1000;

/** `"type"` first and `"ref"` second, as the server writes its own messages. */
function encode(ref: Ref, msg: ClientMessage): string {
  return JSON.stringify(Object.assign({ type: msg.type, ref }, msg));
}

/** Turns `http(s)://host` into `ws(s)://host/ws`; leaves a `ws(s)` URL with a path as is. */
export function normalizeUrl(url: string): string {
  const base = (globalThis as { location?: { href?: string } }).location?.href;
  const u = base ? new URL(url, base) : new URL(url);
  if (u.protocol === "http:") u.protocol = "ws:";
  else if (u.protocol === "https:") u.protocol = "wss:";
  if (u.pathname === "" || u.pathname === "/") u.pathname = "/ws";
  return u.toString();
}

/**
 * A connection to a Roster server: authentication, heartbeats, reconnects, rooms
 * and watches.
 *
 * ```ts
 * const client = new RosterClient({ url: "wss://presence.example.com/ws", getToken });
 * await client.connect();
 * const order = client.room({ entity: "Order", id: 123 }, { state: { field: null } });
 * order.on("change", (members) => render(members));
 * ```
 */
export class RosterClient extends Emitter<ClientEvents> {
  readonly url: string;
  private readonly opts: RosterClientOptions;
  private readonly WS: WebSocketConstructor | undefined;
  private readonly backoff: Backoff;
  private readonly reconnectEnabled: boolean;
  private readonly activity: ActivityTracker;
  private readonly storage: StorageLike | null;
  private readonly clientIdKey: string;
  private _clientId: string;
  private _state: ConnectionState = "idle";
  private ws: WebSocketLike | null = null;
  private conn = 0;
  private welcomed = false;
  private _welcome: WelcomeMessage | null = null;
  private nextRef = 1;
  private pending = new Map<Ref, Pending>();
  private queue: Pending[] = [];
  private fireRefs = new Map<Ref, FireAndForget>();
  private rooms = new Map<string, Room<PresenceState>>();
  private watches = new Set<Watch>();
  private watchCounts = new Map<string, number>();
  private statusCache = new Map<string, WatchedStatus>();
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private hbTimer: ReturnType<typeof setInterval> | null = null;
  /** The pace `hbTimer` runs at (0: not running). */
  private hbEveryMs = 0;
  /** Rooms whose `PRESENCE` named a heartbeat interval of their own (ms). */
  private roomHeartbeats = new Map<string, number>();
  private openingTimer: ReturnType<typeof setTimeout> | null = null;
  /** When the oldest heartbeat not followed by any frame was sent. */
  private unansweredSince: number | null = null;
  private orphanTimer: ReturnType<typeof setTimeout> | null = null;
  private connectWaiter: ReturnType<typeof deferred<WelcomeMessage>> | null = null;
  private latencySamples: number[] = [];
  private _latency: number | null = null;
  private lastWake = Number.NEGATIVE_INFINITY;
  private explicitStatus: "online" | "away" | null = null;
  private unbindOnline: (() => void) | null = null;
  private readonly roomHost: RoomHost;
  private readonly watchHost: WatchHost;

  constructor(options: RosterClientOptions) {
    super();
    if (!options || typeof options.url !== "string") {
      throw new TypeError("RosterClient: `url` is required");
    }
    if (options.token === undefined && options.getToken === undefined) {
      throw new TypeError("RosterClient: pass `token` or `getToken`");
    }
    this.opts = options;
    this.url = normalizeUrl(options.url);
    this.WS =
      options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket ?? undefined;
    this.reconnectEnabled = options.reconnect !== false;
    this.backoff = new Backoff(options.reconnect === false ? {} : (options.reconnect ?? {}), options.random);
    const act = options.heartbeat?.activity ?? true;
    this.activity =
      act === false
        ? new ActivityTracker({ document: null, window: null })
        : new ActivityTracker(act === true ? {} : act);
    this.activity.onWake(() => this.wake());
    this.storage = options.clientIdStorage !== undefined ? options.clientIdStorage : defaultSessionStorage();
    this.clientIdKey = options.clientIdKey ?? DEFAULT_CLIENT_ID_KEY;
    this._clientId = options.clientId ?? stableClientId(this.storage, this.clientIdKey);

    const self = this;
    this.roomHost = {
      get sessionId() {
        return self._welcome?.sessionId ?? null;
      },
      get isOpen() {
        return self._state === "open";
      },
      get resumed() {
        return self._welcome?.resumed ?? false;
      },
      get leaveGraceMs() {
        return self._welcome?.leaveGraceMs ?? self.opts.leaveGraceMs ?? 5000;
      },
      request: (msg, o) => this.request(msg, o),
      send: (msg, onError) => this.sendFireAndForget(msg, onError),
      releaseRoom: (room) => this.releaseRoom(room),
    };
    this.watchHost = {
      addWatched: (w, users) => this.addWatched(w, users),
      removeWatched: (w, users) => this.removeWatched(w, users),
      cachedStatus: (u) => this.statusCache.get(u),
    };
  }

  // -------------------------------------------------------------------------
  // Reading

  get state(): ConnectionState {
    return this._state;
  }

  get clientId(): string {
    return this._clientId;
  }

  /** The session id from the last `WELCOME` (kept while reconnecting). */
  get sessionId(): string | null {
    return this._welcome?.sessionId ?? null;
  }

  get userId(): string | null {
    return this._welcome?.userId ?? null;
  }

  get tenantId(): string | null {
    return this._welcome?.tenantId ?? null;
  }

  /** The last `WELCOME`. */
  get welcome(): WelcomeMessage | null {
    return this._welcome;
  }

  /** Rolling average of the last heartbeat round trips in ms, once measured. */
  get latencyMs(): number | null {
    return this._latency;
  }

  /**
   * The pace of heartbeats now: `heartbeat.intervalMs` when given, else the
   * smallest of WELCOME's interval and the intervals of the open rooms whose
   * type sets one (named in their `PRESENCE`).
   */
  get heartbeatIntervalMs(): number {
    let ms = this.opts.heartbeat?.intervalMs ?? this._welcome?.heartbeatIntervalMs ?? 15_000;
    if (this.opts.heartbeat?.intervalMs === undefined) {
      for (const [room, every] of this.roomHeartbeats) {
        if (this.rooms.has(room)) ms = Math.min(ms, every);
      }
    }
    return Math.max(50, ms);
  }

  /** What the next heartbeat's `active` flag would be. */
  get active(): boolean {
    return this.activity.peek();
  }

  // -------------------------------------------------------------------------
  // Connection

  /**
   * Opens the connection. Resolves with the `WELCOME` once welcomed; rejects if the
   * client closes for good first (kicked, reconnect budget spent, a fixed token
   * refused, or `disconnect()`). Safe to call again: returns the same promise while
   * connecting, and resolves at once when already open.
   */
  connect(): Promise<WelcomeMessage> {
    if (this._state === "open" && this._welcome) return Promise.resolve(this._welcome);
    if (!this.connectWaiter) {
      this.connectWaiter = deferred<WelcomeMessage>();
      // Callers that don't await connect() (fire and forget, then listen to events)
      // must not get an unhandled rejection when the client closes before WELCOME.
      this.connectWaiter.promise.catch(() => {});
    }
    const p = this.connectWaiter.promise;
    if (this._state === "idle" || this._state === "closed") {
      if (!this.WS) {
        const err = new RosterError(
          "no_websocket",
          "no WebSocket implementation: pass the `WebSocket` option (e.g. the `ws` package in Node)",
        );
        this.connectWaiter = null;
        return Promise.reject(err);
      }
      this.backoff.reset();
      this.activity.start();
      this.bindOnline();
      this.setState("connecting");
      void this.openSocket(0);
    }
    return p;
  }

  /**
   * Ends the session: sends `BYE` (the server leaves every room at once, without
   * grace), closes the socket and never reconnects. Requests still waiting are
   * rejected with `client_closed`. Resolves once the socket is closed (at most
   * ~1 s).
   */
  disconnect(): Promise<void> {
    const ws = this.ws;
    const wasOpen = this.welcomed;
    this.finish({ reason: "disconnect" }, null);
    if (!ws) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        try {
          ws.close(1000, "bye");
        } catch {
          /* already closed */
        }
        resolve();
      }, 1000);
      ws.onclose = done;
      // Keep an error handler: `ws` (Node) throws on an 'error' nobody listens to.
      ws.onerror = () => {};
      ws.onmessage = null;
      try {
        if (wasOpen && ws.readyState === OPEN) ws.send(JSON.stringify({ type: "BYE" }));
        else ws.close(1000, "bye");
      } catch {
        done();
      }
    });
  }

  /** Forces the `active` flag of heartbeats (`null`: back to activity detection). */
  setActive(active: boolean | null): void {
    this.activity.setForced(active);
  }

  /**
   * Explicit status: `away` holds this session away whatever the activity says,
   * `online` returns it to automatic status. Re-sent after reconnects.
   */
  setStatus(status: "online" | "away"): void {
    this.explicitStatus = status === "away" ? "away" : null;
    if (this._state === "open") this.sendFireAndForget({ type: "STATUS", status });
  }

  // -------------------------------------------------------------------------
  // Rooms and watches

  /**
   * Joins a room (or returns the handle already open for it, counting one more
   * user of it: balance every call with `room.leave()`). The `SUB` goes out now if
   * connected, else on connect; rooms are re-joined after every reconnect.
   */
  room<S extends PresenceState = PresenceState>(address: RoomAddress, options: RoomOptions<S> = {}): Room<S> {
    const key = roomKey(address);
    if (!ROOM_KEY_PATTERN.test(key)) {
      throw new RosterError("invalid_room", `invalid room key ${JSON.stringify(key)}`, { room: key });
    }
    const existing = this.rooms.get(key);
    if (existing) {
      existing._retain();
      return existing as unknown as Room<S>;
    }
    const room = new Room<S>(this.roomHost, key, options, this.opts.stateThrottleMs ?? 100);
    this.rooms.set(key, room as unknown as Room<PresenceState>);
    if (this._state === "open") room._connected();
    return room;
  }

  /** Rooms currently open through this client. */
  get openRooms(): ReadonlyMap<string, Room<PresenceState>> {
    return this.rooms;
  }

  /** Live statuses of `userIds` (`STATUS_SNAPSHOT`, then `STATUS` events); `close()` when done. */
  watch(userIds: readonly string[]): Watch {
    const w = new Watch(this.watchHost, []);
    this.watches.add(w);
    w.add(userIds);
    return w;
  }

  // -------------------------------------------------------------------------
  // Internals: socket

  private async openSocket(attempt: number): Promise<void> {
    const id = ++this.conn;
    this.fire("connecting", { attempt });
    let token: string;
    try {
      token = await this.resolveToken();
    } catch (e) {
      if (id !== this.conn) return;
      const err =
        e instanceof RosterError ? e : new RosterError("token_unavailable", `token provider failed: ${String(e)}`);
      this.fire("error", err);
      this.connectionLost(undefined, err.message, err);
      return;
    }
    if (id !== this.conn || this._state === "closed") return;
    let ws: WebSocketLike;
    try {
      ws = new this.WS!(this.url);
    } catch (e) {
      this.connectionLost(undefined, `cannot open WebSocket: ${String(e)}`);
      return;
    }
    this.ws = ws;
    this.welcomed = false;
    // Bounds the opening (TCP, upgrade, HELLO → WELCOME) like any request.
    this.armOpeningTimeout(ws, this.opts.requestTimeoutMs ?? 10_000);
    ws.onopen = () => {
      if (id !== this.conn) return;
      const hello: ClientMessage = { type: "HELLO", token, clientId: this._clientId };
      if (this.opts.device !== undefined) hello.device = this.opts.device;
      if (this.opts.os !== undefined) hello.os = this.opts.os;
      if (this.opts.appVersion !== undefined) hello.appVersion = this.opts.appVersion;
      this.request<WelcomeMessage>(hello, { queue: false, force: true }).catch((e: unknown) => {
        if (id !== this.conn) return;
        if (e instanceof RosterError && e.code === "timeout") {
          // No WELCOME in time: drop this socket and try again.
          this.dropSocket(ws, 4000, "hello timeout");
        }
        // auth_failed: the server closes with 4001 next; handled in onclose.
      });
    };
    ws.onmessage = (ev: { data: unknown }) => {
      if (id !== this.conn) return;
      this.onFrame(ev.data);
    };
    ws.onerror = () => {
      /* a close event follows */
    };
    ws.onclose = (ev: { code?: number; reason?: string }) => {
      if (id !== this.conn) return;
      this.onClose(ev?.code ?? CloseCode.Abnormal, ev?.reason ?? "");
    };
  }

  private async resolveToken(): Promise<string> {
    const t = this.opts.getToken ? await this.opts.getToken() : this.opts.token;
    if (typeof t !== "string" || t.length === 0) {
      throw new RosterError("token_unavailable", "no token: the token provider returned nothing");
    }
    return t;
  }

  /** Closes a socket we gave up on and continues as if the connection dropped. */
  private dropSocket(ws: WebSocketLike, code: number, reason: string): void {
    if (this.ws !== ws) return;
    this.conn++; // ignore whatever that socket still reports
    this.ws = null;
    try {
      ws.close(code, reason);
    } catch {
      /* ignore */
    }
    this.onClose(code, reason);
  }

  private onClose(code: number, reason: string): void {
    this.ws = null;
    this.welcomed = false;
    this.stopTimers();
    this.failInFlight();
    for (const r of this.rooms.values()) r._disconnected();
    if (this._state === "closed") return;
    if (code === CloseCode.Kicked) {
      this.fire("kicked", { code, reason });
      this.finish({ code, reason: reason || "kicked" }, new RosterError("kicked", `kicked by the server: ${reason}`));
      return;
    }
    if (code === CloseCode.Replaced) {
      // Another tab or process resumed our client id (a duplicated tab copies
      // sessionStorage). Continue as a new session under a fresh id, instead of
      // taking it back and replacing each other forever.
      const newClientId = randomId();
      this._clientId = newClientId;
      if (this.opts.clientId === undefined) storeClientId(newClientId, this.storage, this.clientIdKey);
      this.fire("replaced", { code, reason, newClientId });
    }
    if (code === CloseCode.AuthFailed && !this.opts.getToken) {
      const err = new RosterError("auth_failed", `authentication failed: ${reason || "token refused"}`);
      this.finish({ code, reason: reason || "auth_failed" }, err);
      return;
    }
    this.connectionLost(code, reason);
  }

  /** Schedules the next attempt, or gives up. */
  private connectionLost(code: number | undefined, reason: string, cause?: RosterError): void {
    this.ws = null;
    this.stopTimers();
    if (this._state === "closed") return;
    const delay = this.reconnectEnabled ? this.backoff.next() : null;
    if (delay === null) {
      const err =
        cause ??
        new RosterError(
          "max_attempts",
          this.reconnectEnabled
            ? `gave up after ${this.backoff.attempts} reconnect attempts (last close: ${code ?? "none"} ${reason})`
            : `connection lost (${code ?? "none"} ${reason}) and reconnecting is disabled`,
        );
      this.finish({ ...(code !== undefined ? { code } : {}), reason: reason || err.message }, err);
      return;
    }
    const attempt = this.backoff.attempts;
    this.setState("reconnecting");
    this.fire("reconnecting", {
      attempt,
      delayMs: delay,
      ...(code !== undefined ? { code } : {}),
      ...(reason ? { reason } : {}),
    });
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      void this.openSocket(attempt);
    }, delay);
  }

  /** Closed for good. */
  private finish(ev: ClosedEvent, error: RosterError | null): void {
    if (this._state === "closed") return;
    this.conn++;
    const ws = this.ws;
    this.ws = null;
    this.welcomed = false;
    this.stopTimers();
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.activity.stop();
    this.unbindOnline?.();
    this.unbindOnline = null;
    for (const r of this.rooms.values()) r._disconnected();
    const closedErr = error ?? new RosterError("client_closed", "the client was disconnected");
    for (const p of [...this.pending.values(), ...this.queue]) this.settle(p, null, closedErr);
    this.pending.clear();
    this.queue = [];
    this.fireRefs.clear();
    if (ws && ev.reason !== "disconnect") {
      try {
        ws.close(1000, "closed");
      } catch {
        /* ignore */
      }
    }
    const waiter = this.connectWaiter;
    this.connectWaiter = null;
    this.setState("closed");
    this.fire("closed", error ? { ...ev, error } : ev);
    waiter?.reject(closedErr);
  }

  private setState(s: ConnectionState): void {
    if (s === this._state) return;
    const previous = this._state;
    this._state = s;
    this.fire("state", { state: s, previous });
  }

  // -------------------------------------------------------------------------
  // Internals: inbound

  private onFrame(data: unknown): void {
    this.unansweredSince = null;
    let text: string;
    if (typeof data === "string") text = data;
    else if (data instanceof ArrayBuffer) text = new TextDecoder().decode(data);
    else if (ArrayBuffer.isView(data)) text = new TextDecoder().decode(data);
    else return;
    let msg: ServerMessage;
    try {
      msg = JSON.parse(text) as ServerMessage;
    } catch {
      this.fire("error", new RosterError("protocol", "the server sent a frame that is not JSON"));
      return;
    }
    if (!msg || typeof msg !== "object" || typeof msg.type !== "string") return;
    this.dispatch(msg);
  }

  private dispatch(msg: ServerMessage): void {
    switch (msg.type) {
      case "WELCOME":
        this.onWelcome(msg);
        break;
      case "PRESENCE":
        if (typeof msg.heartbeatIntervalMs === "number" && msg.heartbeatIntervalMs > 0) {
          this.roomHeartbeats.set(msg.room, msg.heartbeatIntervalMs);
        } else {
          this.roomHeartbeats.delete(msg.room);
        }
        this.rearmHeartbeat();
        this.rooms.get(msg.room)?._onPresence(msg);
        break;
      case "PRESENCE_COUNT":
        this.rooms.get(msg.room)?._onCount(msg);
        break;
      case "PRESENCE_DIFF":
        this.rooms.get(msg.room)?._onDiff(msg);
        break;
      case "LOCK":
        this.rooms.get(msg.room)?._onLock(msg);
        break;
      case "ENTITY":
        this.rooms.get(msg.room)?._onEntity(msg);
        break;
      case "EVENT":
        this.rooms.get(msg.room)?._onEvent(msg);
        break;
      case "STATUS_SNAPSHOT": {
        const m = new Map<string, WatchedStatus>();
        for (const [u, s] of Object.entries(msg.users ?? {})) m.set(u, toWatchedStatus(s));
        this.applyStatuses(m);
        break;
      }
      case "STATUS":
        this.applyStatuses(new Map([[msg.userId, toWatchedStatus(msg)]]));
        break;
      case "HB_ACK":
        this.onHbAck(msg);
        break;
      case "ERROR":
        this.onError(msg);
        return;
      default:
        break;
    }
    if ("ref" in msg && msg.ref !== undefined) {
      const p = this.pending.get(msg.ref);
      if (p) {
        this.pending.delete(msg.ref);
        this.settle(p, msg, null);
      } else {
        this.fireRefs.delete(msg.ref);
      }
    }
  }

  private onError(msg: ErrorMessage): void {
    const code: RosterErrorCode = isServerErrorCode(msg.code) ? msg.code : "protocol";
    const text = msg.message || msg.code;
    if (msg.ref !== undefined) {
      const p = this.pending.get(msg.ref);
      if (p) {
        this.pending.delete(msg.ref);
        const err = this.errorFor(code, text, msg.ref, p.msg);
        this.settle(p, null, err);
        if (p.msg.type === "HELLO" || p.msg.type === "WATCH") this.reportUnawaited(err, p.msg);
        return;
      }
      const f = this.fireRefs.get(msg.ref);
      if (f) {
        this.fireRefs.delete(msg.ref);
        const err = this.errorFor(code, text, msg.ref, f.msg);
        if (f.onError) f.onError(err);
        else this.fire("error", err);
        return;
      }
    }
    this.fire("error", new RosterError(code, text, msg.ref !== undefined ? { ref: msg.ref } : {}));
  }

  private errorFor(code: RosterErrorCode, text: string, ref: Ref, m: ClientMessage): RosterError {
    const room = "room" in m ? m.room : undefined;
    return new RosterError(code, text, { ref, request: m.type, ...(room !== undefined ? { room } : {}) });
  }

  /** Errors of requests the client makes on its own behalf go to the `error` events. */
  private reportUnawaited(err: RosterError, m: ClientMessage): void {
    if (m.type === "WATCH") {
      for (const w of this.watches) if (w.users.some((u) => m.users.includes(u))) w._error(err);
    } else {
      this.fire("error", err);
    }
  }

  private onWelcome(msg: WelcomeMessage): void {
    this._welcome = msg;
    this.welcomed = true;
    if (this.openingTimer) clearTimeout(this.openingTimer);
    this.openingTimer = null;
    this.backoff.reset();
    this.latencySamples = [];
    this.setState("open");
    this.startHeartbeat();
    // Rooms: re-SUB every open room (rule 6 after a resume; a fresh join otherwise).
    for (const r of this.rooms.values()) r._connected();
    if (msg.resumed) this.scheduleOrphans(msg.rooms ?? []);
    // Watches: WATCH again for a fresh snapshot.
    const users = [...this.watchCounts.keys()];
    if (users.length > 0) this.sendWatch(users);
    if (this.explicitStatus === "away") this.sendFireAndForget({ type: "STATUS", status: "away" });
    // Requests made while disconnected.
    const queued = this.queue;
    this.queue = [];
    for (const p of queued) this.write(p);
    const waiter = this.connectWaiter;
    this.connectWaiter = null;
    this.fire("open", msg);
    waiter?.resolve(msg);
  }

  /** Rooms the resumed session is in that no `room()` claimed within the grace are left. */
  private scheduleOrphans(keys: string[]): void {
    if (this.orphanTimer) clearTimeout(this.orphanTimer);
    this.orphanTimer = null;
    const orphans = keys.filter((k) => !this.rooms.has(k));
    if (orphans.length === 0) return;
    const conn = this.conn;
    this.orphanTimer = setTimeout(() => {
      this.orphanTimer = null;
      if (conn !== this.conn || this._state !== "open") return;
      for (const k of orphans) {
        if (!this.rooms.has(k)) this.sendFireAndForget({ type: "UNSUB", room: k }, () => {});
      }
    }, this.opts.orphanRoomGraceMs ?? 5000);
  }

  private applyStatuses(m: Map<string, WatchedStatus>): void {
    for (const [u, s] of m) {
      if (this.watchCounts.has(u)) this.statusCache.set(u, s);
    }
    for (const w of this.watches) w._apply(m);
  }

  // -------------------------------------------------------------------------
  // Internals: heartbeats and liveness

  private startHeartbeat(): void {
    this.sendHeartbeat();
    this.rearmHeartbeat();
  }

  /** (Re)starts the heartbeat timer when its pace changed (a room came or went). */
  private rearmHeartbeat(): void {
    if (this._state !== "open") return;
    const every = this.heartbeatIntervalMs;
    if (this.hbTimer && every === this.hbEveryMs) return;
    if (this.hbTimer) clearInterval(this.hbTimer);
    this.hbEveryMs = every;
    this.hbTimer = setInterval(() => this.heartbeatTick(), every);
  }

  /**
   * Liveness: every heartbeat is answered, so a heartbeat still unanswered (no
   * frame at all since it was sent) after a whole session timeout means a dead
   * path (half-open TCP, sleeping laptop): drop the socket and reconnect.
   * Measured from our own heartbeats rather than with a separate timer, so that a
   * background tab whose timers the browser throttles is not taken for dead.
   */
  private heartbeatTick(): void {
    const w = this._welcome;
    const ws = this.ws;
    if (w && ws && this.unansweredSince !== null && monotonicNow() - this.unansweredSince > w.sessionTimeoutMs) {
      this.dropSocket(ws, 4000, "no reply from the server");
      return;
    }
    this.sendHeartbeat();
  }

  private sendHeartbeat(): void {
    if (this._state !== "open") return;
    const hb: ClientMessage = { type: "HB", t: Math.round(monotonicNow() * 1000) / 1000, active: this.activity.take() };
    if (this._latency !== null) hb.latencyMs = this._latency;
    if (this.sendFireAndForget(hb) && this.unansweredSince === null) this.unansweredSince = monotonicNow();
  }

  private onHbAck(msg: HbAckMessage): void {
    if (typeof msg.t !== "number") return;
    const rtt = monotonicNow() - msg.t;
    if (!(rtt >= 0) || rtt > 120_000) return;
    this.latencySamples.push(rtt);
    if (this.latencySamples.length > LATENCY_SAMPLES) this.latencySamples.shift();
    const avg = this.latencySamples.reduce((a, b) => a + b, 0) / this.latencySamples.length;
    this._latency = Math.round(avg);
    this.fire("latency", this._latency);
  }

  /** Activity after an inactive heartbeat: report it now rather than at the next tick. */
  private wake(): void {
    const now = monotonicNow();
    if (now - this.lastWake < WAKE_MIN_GAP_MS) return;
    this.lastWake = now;
    this.sendHeartbeat();
  }

  /** No WELCOME within `ms` of opening the socket: give up on it and retry. */
  private armOpeningTimeout(ws: WebSocketLike, ms: number): void {
    if (this.openingTimer) clearTimeout(this.openingTimer);
    this.openingTimer = setTimeout(() => {
      this.openingTimer = null;
      if (this.ws === ws && !this.welcomed) this.dropSocket(ws, 4000, "no WELCOME in time");
    }, ms);
  }

  private stopTimers(): void {
    if (this.hbTimer) clearInterval(this.hbTimer);
    this.hbTimer = null;
    this.hbEveryMs = 0;
    if (this.openingTimer) clearTimeout(this.openingTimer);
    this.openingTimer = null;
    this.unansweredSince = null;
    if (this.orphanTimer) clearTimeout(this.orphanTimer);
    this.orphanTimer = null;
  }

  /** Browsers: reconnect at once when the network comes back instead of waiting out the back-off. */
  private bindOnline(): void {
    if (this.unbindOnline) return;
    const w = (globalThis as { window?: { addEventListener?: (t: string, l: () => void) => void; removeEventListener?: (t: string, l: () => void) => void } }).window;
    if (!w?.addEventListener || !w.removeEventListener) return;
    const onOnline = () => {
      if (this._state === "reconnecting" && this.reconnectTimer) {
        clearTimeout(this.reconnectTimer);
        this.reconnectTimer = null;
        void this.openSocket(this.backoff.attempts);
      }
    };
    w.addEventListener("online", onOnline);
    this.unbindOnline = () => w.removeEventListener!("online", onOnline);
  }

  // -------------------------------------------------------------------------
  // Internals: outbound

  /**
   * Sends a request and resolves with its reply (matched by `ref`), or rejects
   * with the `ERROR` for it, a timeout, or a lost connection. With `queue` (the
   * default) it waits for the connection while disconnected.
   */
  private request<T>(
    msg: ClientMessage,
    o: { queue?: boolean; force?: boolean; onRef?: (ref: Ref) => void; timeoutMs?: number } = {},
  ): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const ref = this.nextRef++;
      const p: Pending = {
        ref,
        msg,
        resolve: resolve as (v: unknown) => void,
        reject,
        timer: null,
        conn: null,
        queued: false,
      };
      if (this._state === "closed") {
        reject(new RosterError("client_closed", "the client is closed", { request: msg.type }));
        return;
      }
      const timeout = o.timeoutMs ?? this.opts.requestTimeoutMs ?? 10_000;
      p.timer = setTimeout(() => {
        p.timer = null;
        this.pending.delete(ref);
        this.queue = this.queue.filter((q) => q !== p);
        const room = "room" in msg ? msg.room : undefined;
        reject(
          new RosterError("timeout", `no reply to ${msg.type} within ${timeout} ms`, {
            ref,
            request: msg.type,
            ...(room !== undefined ? { room } : {}),
          }),
        );
      }, timeout);
      o.onRef?.(ref);
      if (this._state === "open" || (o.force && this.ws && this.ws.readyState === OPEN)) {
        this.write(p);
      } else if (o.queue !== false) {
        p.queued = true;
        this.queue.push(p);
      } else {
        this.settle(p, null, new RosterError("connection_closed", "not connected", { request: msg.type }));
      }
    });
  }

  private write(p: Pending): void {
    const ws = this.ws;
    if (!ws || ws.readyState !== OPEN) {
      this.settle(p, null, new RosterError("connection_closed", "not connected", { request: p.msg.type }));
      return;
    }
    p.queued = false;
    p.conn = this.conn;
    this.pending.set(p.ref, p);
    try {
      ws.send(encode(p.ref, p.msg));
    } catch (e) {
      this.pending.delete(p.ref);
      this.settle(p, null, new RosterError("connection_closed", `send failed: ${String(e)}`, { request: p.msg.type }));
    }
  }

  /** Sends a message with a ref (so an `ERROR` for it can be attributed) and no awaited reply. */
  private sendFireAndForget(msg: ClientMessage, onError?: (e: RosterError) => void): boolean {
    const ws = this.ws;
    if (!ws || ws.readyState !== OPEN || !this.welcomed) return false;
    const ref = this.nextRef++;
    this.fireRefs.set(ref, onError ? { msg, onError } : { msg });
    if (this.fireRefs.size > MAX_FIRE_REFS) {
      const oldest = this.fireRefs.keys().next().value;
      if (oldest !== undefined) this.fireRefs.delete(oldest);
    }
    try {
      ws.send(encode(ref, msg));
      return true;
    } catch {
      this.fireRefs.delete(ref);
      return false;
    }
  }

  private settle(p: Pending, value: unknown, error: unknown): void {
    if (p.timer) clearTimeout(p.timer);
    p.timer = null;
    if (error) p.reject(error);
    else p.resolve(value);
  }

  /** Requests written to the lost connection cannot be known to have run: reject them. */
  private failInFlight(): void {
    for (const [ref, p] of this.pending) {
      if (p.conn === null) continue;
      this.pending.delete(ref);
      this.settle(
        p,
        null,
        new RosterError("connection_closed", `the connection closed before the reply to ${p.msg.type}`, {
          ref,
          request: p.msg.type,
        }),
      );
    }
    this.fireRefs.clear();
  }

  private async releaseRoom(room: Room<never>): Promise<void> {
    if (this.rooms.get(room.key) !== (room as unknown as Room<PresenceState>)) return;
    this.rooms.delete(room.key);
    this.roomHeartbeats.delete(room.key);
    this.rearmHeartbeat();
    if (this._state !== "open") return;
    try {
      await this.request({ type: "UNSUB", room: room.key }, { queue: false });
    } catch {
      /* not_subscribed (never joined) or connection lost: nothing to undo */
    }
  }

  private addWatched(w: Watch, users: string[]): void {
    if (!this.watches.has(w)) this.watches.add(w);
    const fresh: string[] = [];
    for (const u of users) {
      const n = this.watchCounts.get(u) ?? 0;
      this.watchCounts.set(u, n + 1);
      if (n === 0) fresh.push(u);
    }
    if (fresh.length > 0 && this._state === "open") this.sendWatch(fresh);
  }

  private removeWatched(w: Watch, users: string[]): void {
    const gone: string[] = [];
    for (const u of users) {
      const n = (this.watchCounts.get(u) ?? 0) - 1;
      if (n <= 0) {
        this.watchCounts.delete(u);
        this.statusCache.delete(u);
        gone.push(u);
      } else {
        this.watchCounts.set(u, n);
      }
    }
    if (w.users.length === 0) this.watches.delete(w);
    if (gone.length > 0 && this._state === "open") {
      for (let i = 0; i < gone.length; i += WATCH_CHUNK) {
        this.sendFireAndForget({ type: "UNWATCH", users: gone.slice(i, i + WATCH_CHUNK) });
      }
    }
  }

  private sendWatch(users: string[]): void {
    for (let i = 0; i < users.length; i += WATCH_CHUNK) {
      const chunk = users.slice(i, i + WATCH_CHUNK);
      this.request({ type: "WATCH", users: chunk }, { queue: false }).catch(() => {
        /* reported through the watches' `error` events (see onError) */
      });
    }
  }
}
