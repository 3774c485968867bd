/**
 * Helpers for the compatibility tests: unchanged `pusher-js` clients (signed by the
 * official `pusher` Node SDK, as a backend's auth endpoint would) and native
 * protocol clients (the `ws` package, docs/PROTOCOL.md) against the server that
 * `./globalSetup.ts` started with three Pusher apps.
 *
 * Every client records every frame it received, so that a test can assert what
 * did *not* arrive as well as what did.
 */
import Pusher from "pusher-js";
import type { Channel, PresenceChannel } from "pusher-js";
import PusherServer from "pusher";
import WebSocket from "ws";
import { inject } from "vitest";
import { mintToken, server, waitFor, type Claims } from "../../test-support/server.js";
import type { PusherApp } from "./globalSetup.js";

export { mintToken, server, sleep, uid, waitFor } from "../../test-support/server.js";

export const apps = inject("pusherApps");
const [HOST, PORT] = server.addr.split(":") as [string, string];
export const WS_PORT = Number(PORT);

/** `ROSTER_TIMING_LEAVE_GRACE` of the test server (FAST_TIMINGS). */
export const GRACE_MS = 1000;
/** Long enough for a leave to have been announced had it been going to be. */
export const AFTER_GRACE_MS = GRACE_MS + 1200;

/** A frame as pusher-js decoded it (`data` parsed when it was a JSON string). */
export interface PusherFrame {
  event: string;
  channel?: string;
  data?: any;
  user_id?: string;
}

export interface PresenceUser {
  user_id: string;
  user_info?: Record<string, unknown>;
}

export interface SigninUser {
  id: string;
  user_info?: Record<string, unknown>;
  watchlist?: string[];
}

export interface ClientOptions {
  app?: PusherApp;
  /** The `channel_data` the auth handler signs for presence channels. */
  user?: PresenceUser;
  /** The `user_data` the auth handler signs for `pusher:signin`. */
  signin?: SigninUser;
  /** Sign with this secret instead of the app's (a wrong signature). */
  signWithSecret?: string;
  /** Use this key in the URL instead of the app's. */
  key?: string;
}

/** The SDK a backend would use to sign (never talks HTTP here). */
function sdk(app: PusherApp, secret = app.secret): PusherServer {
  return new PusherServer({ appId: app.appId, key: app.key, secret, host: HOST, port: PORT, useTLS: false });
}

/**
 * The official `pusher` Node SDK configured for the HTTP API of the test server
 * (`{appId, key, secret, host, port, useTLS: false}`), as a backend would use it:
 * `secret` to sign with another secret than the app's (a wrong signature).
 */
export function backend(app: PusherApp = apps.acme, secret = app.secret): PusherServer {
  return new PusherServer({ appId: app.appId, key: app.key, secret, host: HOST, port: PORT, useTLS: false, timeout: 10_000 });
}

const open = new Set<{ close(): void }>();

/** Closes every client the test opened (call in `afterEach`). */
export function closeAll(): void {
  for (const c of open) c.close();
  open.clear();
}

/** A `pusher-js` client and what it saw. */
export class PusherClient {
  readonly pusher: Pusher;
  /** Every frame received, in order. */
  readonly frames: PusherFrame[] = [];
  /** Every `error` the connection emitted. */
  readonly errors: any[] = [];
  /** Every state the connection went through. */
  readonly states: string[] = [];
  /** Every watchlist event (`online`/`offline`) pusher-js emitted. */
  readonly watch: { name: string; user_ids: string[] }[] = [];
  closed = false;

  constructor(readonly options: ClientOptions = {}) {
    const app = options.app ?? apps.acme;
    const signer = sdk(app, options.signWithSecret);
    this.pusher = new Pusher(options.key ?? app.key, {
      cluster: "mt1",
      wsHost: HOST,
      wsPort: WS_PORT,
      forceTLS: false,
      enabledTransports: ["ws"],
      enableStats: false,
      channelAuthorization: {
        customHandler: ({ socketId, channelName }, callback) => {
          try {
            const data = channelName.startsWith("presence-") ? options.user : undefined;
            callback(null, signer.authorizeChannel(socketId, channelName, data as PusherServer.PresenceChannelData));
          } catch (e) {
            callback(e as Error, null);
          }
        },
      },
      userAuthentication: {
        customHandler: ({ socketId }, callback) => {
          try {
            if (!options.signin) throw new Error("this client has no signin user");
            callback(null, signer.authenticateUser(socketId, options.signin));
          } catch (e) {
            callback(e as Error, null);
          }
        },
      },
    });
    this.pusher.connection.bind("message", (f: PusherFrame) => this.frames.push(f));
    this.pusher.connection.bind("error", (e: unknown) => this.errors.push(e));
    this.pusher.connection.bind("state_change", (s: { current: string }) => this.states.push(s.current));
    for (const name of ["online", "offline"]) {
      this.pusher.user.watchlist.bind(name, (e: { name: string; user_ids: string[] }) => this.watch.push(e));
    }
    open.add(this);
  }

  get socketId(): string {
    return this.pusher.connection.socket_id;
  }

  /** Waits until the connection is `connected`. */
  async connected(): Promise<this> {
    await waitFor(() => this.pusher.connection.state === "connected", "pusher-js to connect");
    return this;
  }

  /** Subscribes and waits for `pusher:subscription_succeeded` (rejects on `pusher:subscription_error`). */
  subscribe<C extends Channel = Channel>(name: string): Promise<C> {
    const channel = this.pusher.subscribe(name) as C;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no answer to the subscription to ${name}`)), 5000);
      channel.bind("pusher:subscription_succeeded", () => {
        clearTimeout(timer);
        resolve(channel);
      });
      channel.bind("pusher:subscription_error", (e: unknown) => {
        clearTimeout(timer);
        reject(Object.assign(new Error(`subscription_error on ${name}: ${JSON.stringify(e)}`), { data: e }));
      });
    });
  }

  presence(name: string): Promise<PresenceChannel> {
    return this.subscribe<PresenceChannel>(name);
  }

  /** Frames received of this event (and channel). */
  seen(event: string, channel?: string): PusherFrame[] {
    return this.frames.filter((f) => f.event === event && (channel === undefined || f.channel === channel));
  }

  /** Waits for the `n`-th frame of this event (and channel) and returns it. */
  async next(event: string, channel?: string, n = 1, timeoutMs = 5000): Promise<PusherFrame> {
    return waitFor(() => this.seen(event, channel)[n - 1], `${event}${channel ? ` on ${channel}` : ""} #${n}`, timeoutMs);
  }

  /** `pusher:error` frames received. */
  pusherErrors(): { code: number | null; message: string }[] {
    return this.seen("pusher:error").map((f) => f.data);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.pusher.disconnect();
    open.delete(this);
  }
}

/** A connected `pusher-js` client. */
export function connect(options: ClientOptions = {}): Promise<PusherClient> {
  return new PusherClient(options).connected();
}

/** A client of the native protocol (docs/PROTOCOL.md) over `ws`. */
export class NativeClient {
  readonly frames: any[] = [];
  closeCode: number | undefined;
  private ref = 1;

  private constructor(readonly ws: WebSocket) {
    ws.on("message", (raw) => this.frames.push(JSON.parse(raw.toString())));
    ws.on("close", (code) => (this.closeCode = code));
    open.add(this);
  }

  /** Opens a connection, sends HELLO with a token of `claims` (tenant `acme`), waits for WELCOME. */
  static async connect(claims: Claims): Promise<NativeClient> {
    const ws = new WebSocket(`ws://${server.addr}/ws`);
    const c = new NativeClient(ws);
    await new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
    });
    c.send({ type: "HELLO", token: mintToken(claims) });
    await c.next((f) => f.type === "WELCOME", "WELCOME");
    return c;
  }

  send(msg: Record<string, unknown>): void {
    this.ws.send(JSON.stringify({ ref: this.ref++, ...msg }));
  }

  /** SUB (list mode); resolves with the PRESENCE answer. */
  async sub(room: string): Promise<any> {
    const ref = this.ref;
    this.send({ type: "SUB", room });
    return this.next((f) => (f.type === "PRESENCE" || f.type === "ERROR") && f.ref === ref, `PRESENCE of ${room}`);
  }

  seen(pred: (f: any) => boolean): any[] {
    return this.frames.filter(pred);
  }

  next(pred: (f: any) => boolean, what: string, timeoutMs = 5000): Promise<any> {
    return waitFor(() => this.frames.find(pred), what, timeoutMs);
  }

  /** Every user id that joined `room` through a PRESENCE_DIFF, with its join entry. */
  joins(room: string): any[] {
    return this.seen((f) => f.type === "PRESENCE_DIFF" && f.room === room).flatMap((f) => f.joins);
  }

  leaves(room: string): any[] {
    return this.seen((f) => f.type === "PRESENCE_DIFF" && f.room === room).flatMap((f) => f.leaves);
  }

  close(): void {
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) this.ws.terminate();
    open.delete(this);
  }
}

/** A raw WebSocket to the Pusher endpoint, for what pusher-js hides (close codes). */
export async function rawPusher(key: string, query = "protocol=7&client=js&version=8.6.0"): Promise<{
  frames: any[];
  closed: Promise<{ code: number; reason: string }>;
  ws: WebSocket;
}> {
  const ws = new WebSocket(`ws://${server.addr}/app/${key}?${query}`);
  const frames: any[] = [];
  ws.on("message", (raw) => frames.push(JSON.parse(raw.toString())));
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    ws.on("close", (code, reason) => resolve({ code, reason: reason.toString() })),
  );
  await new Promise<void>((resolve, reject) => {
    ws.once("open", () => resolve());
    ws.once("error", reject);
  });
  open.add({ close: () => ws.terminate() });
  return { frames, closed, ws };
}

/** Members of a presence channel as pusher-js holds them: `{id: info}`. */
export function membersOf(channel: PresenceChannel): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  channel.members.each((m: { id: string; info: unknown }) => (out[m.id] = m.info));
  return out;
}
