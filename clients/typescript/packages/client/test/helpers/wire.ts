/** Builders for server messages in unit tests. */
import type {
  PresenceDiffMessage,
  PresenceMessage,
  UserStatus,
  WireMember,
  WireSession,
  WireUser,
} from "../../src/protocol.js";

export function session(id: string, state: Record<string, unknown> = {}, extra: Partial<WireSession> = {}): WireSession {
  return {
    sessionId: id,
    device: "web",
    os: null,
    appVersion: null,
    latencyMs: null,
    joinedAt: "2026-11-26T14:03:05.140Z",
    state,
    ...extra,
  };
}

export function user(userId: string, sessions: WireSession[], status: UserStatus = "online", name?: string): WireUser {
  return { userId, status, sessions, ...(name ? { name } : {}) };
}

export function member(
  userId: string,
  s: WireSession,
  status: UserStatus = "online",
  name?: string,
): WireMember {
  return { userId, status, session: s, ...(name ? { name } : {}) };
}

export function presence(room: string, seq: number, users: WireUser[], extra: Partial<PresenceMessage> = {}): PresenceMessage {
  return {
    type: "PRESENCE",
    room,
    seq,
    count: users.reduce((n, u) => n + u.sessions.length, 0),
    users,
    stale: false,
    busyBy: null,
    version: 0,
    locks: {},
    ...extra,
  };
}

export function diff(
  room: string,
  seq: number,
  parts: Partial<Pick<PresenceDiffMessage, "joins" | "leaves" | "updates">> = {},
): PresenceDiffMessage {
  return { type: "PRESENCE_DIFF", room, seq, joins: [], leaves: [], updates: [], ...parts };
}
