/**
 * Real users for the hook and component tests: `RosterClient`s (the package the
 * hooks import, `@roster/client`) on the `ws` package's WebSocket, connected to the
 * real `roster` server that the shared `test-support/globalSetup.ts` starts, plus
 * REST reads of what the server holds. Each client records the frames its sockets
 * send (the real sockets, spied on: there is no server in between).
 */
import { RosterClient, type RosterClientOptions } from "@roster/client";
import { randomInt } from "node:crypto";
import { onTestFinished } from "vitest";
import WebSocket from "ws";
import { WS_URL, adminToken, mintToken, rest, uid } from "../../../../test-support/server.js";

export { WS_URL, adminToken, mintToken, rest, server, serviceToken, uid } from "../../../../test-support/server.js";

/** A frame a client sent, parsed. */
export type Frame = Record<string, unknown> & { type: string };

export interface Wire {
  /** Every frame this client's sockets sent, in order. */
  frames: Frame[];
  /** Every socket (connection) the client opened. */
  sockets: WebSocket[];
  /** The frames of `type` sent, optionally for one room. */
  sent(type: string, room?: string): Frame[];
}

export interface UserOptions extends Partial<RosterClientOptions> {
  /** The token's `name` claim (the display name the others see). */
  name?: string;
  /** The token's `info` claim (`avatarUrl`, …). */
  info?: Record<string, unknown>;
}

/** Options of a real client of user `userId`, and the record of what it sends. */
export function clientOptions(userId: string, opts: UserOptions = {}): { options: RosterClientOptions; wire: Wire } {
  const { name, info, ...extra } = opts;
  const frames: Frame[] = [];
  const sockets: WebSocket[] = [];
  class RecordingWebSocket extends WebSocket {
    constructor(url: string) {
      super(url);
      sockets.push(this);
      const send = this.send.bind(this) as (data: unknown, ...rest: unknown[]) => void;
      this.send = ((data: unknown, ...rest: unknown[]) => {
        if (typeof data === "string") frames.push(JSON.parse(data) as Frame);
        send(data, ...rest);
      }) as WebSocket["send"];
    }
  }
  const options: RosterClientOptions = {
    url: WS_URL,
    token: mintToken({ sub: userId, ...(name ? { name } : {}), ...(info ? { info } : {}) }),
    device: "web",
    clientIdStorage: null,
    // Always active: the test server's away_after is 1 s.
    heartbeat: { activity: false },
    stateThrottleMs: 20,
    reconnect: { baseMs: 50, maxMs: 200 },
    WebSocket: RecordingWebSocket,
    ...extra,
  };
  const wire: Wire = {
    frames,
    sockets,
    sent: (type, room) => frames.filter((f) => f.type === type && (room === undefined || f.room === room)),
  };
  return { options, wire };
}

export interface TestUser extends Wire {
  /** The user id (unique per test: tests share one server). */
  id: string;
  client: RosterClient;
}

/** A real client of a new user `<prefix>-<random>`, disconnected after the test. */
export function user(prefix: string, opts: UserOptions = {}): TestUser {
  const id = uid(prefix);
  return clientOf(id, opts);
}

/** Another real client (another tab or device) of user `id`. */
export function clientOf(id: string, opts: UserOptions = {}): TestUser {
  const { options, wire } = clientOptions(id, opts);
  const client = new RosterClient(options);
  onTestFinished(async () => {
    if (client.state !== "closed") await client.disconnect();
  });
  return { id, client, ...wire };
}

/** A room address no other test uses. */
export function newOrder(): { entity: "Order"; id: number } {
  return { entity: "Order", id: randomInt(1, 2 ** 47) };
}

// --- what the server holds (REST, admin token) -----------------------------

export interface RestSession {
  sessionId: string;
  userId: string;
  device: string;
  rooms: string[];
  status: string;
}

export interface RestPresence {
  count: number;
  users: Array<{ userId: string; name?: string; status: string; sessions: Array<{ sessionId: string; device: string; state: unknown }> }>;
  locks: Record<string, { userId: string; sessionId: string }>;
  stale: boolean;
  busyBy: string | null;
  version: number;
}

async function get<T>(path: string): Promise<T> {
  const r = await rest("GET", path, adminToken());
  if (r.status !== 200) throw new Error(`GET ${path}: ${r.status} ${JSON.stringify(r.json)}`);
  return r.json as T;
}

/** `GET /rooms/{room}/presence`; `null` when the server has no such room. */
export async function roomPresence(room: string): Promise<RestPresence | null> {
  const path = `/rooms/${encodeURIComponent(room)}/presence`;
  const r = await rest("GET", path, adminToken());
  if (r.status === 404) return null;
  if (r.status !== 200) throw new Error(`GET ${path}: ${r.status} ${JSON.stringify(r.json)}`);
  return r.json as RestPresence;
}

/** The session ids of the room's members, one entry per session the server holds. */
export async function sessionsIn(room: string): Promise<string[]> {
  const p = await roomPresence(room);
  return (p?.users ?? []).flatMap((u) => u.sessions.map((s) => s.sessionId));
}

/** `GET /rooms/{room}/locks`: field → holder's session id. */
export async function roomLocks(room: string): Promise<Record<string, string>> {
  const r = await rest("GET", `/rooms/${encodeURIComponent(room)}/locks`, adminToken());
  if (r.status === 404) return {};
  if (r.status !== 200) throw new Error(`GET locks of ${room}: ${r.status} ${JSON.stringify(r.json)}`);
  const items = (r.json as { items: Array<{ field: string; sessionId: string }> }).items;
  return Object.fromEntries(items.map((l) => [l.field, l.sessionId]));
}

/** `GET /sessions?user=`: the user's live sessions. */
export async function sessionsOf(userId: string): Promise<RestSession[]> {
  return (await get<{ items: RestSession[] }>(`/sessions?user=${encodeURIComponent(userId)}`)).items;
}
