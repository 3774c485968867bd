/**
 * Wire types of the Roster native WebSocket protocol (`GET /ws`), as documented in
 * `docs/PROTOCOL.md`. Field names are the wire's (camelCase); times are ISO-8601
 * UTC strings with milliseconds.
 */

/** Arbitrary JSON. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/**
 * A member's published state: a JSON object (at most 2 KiB serialised on the
 * server). Values must be JSON-serialisable.
 */
export type PresenceState = Record<string, unknown>;

/** A user's merged status (best of their sessions: online > away > offline). */
export type UserStatus = "online" | "away" | "offline";

/** Why a session left a room. */
export type LeaveReason = "left" | "disconnected" | "timeout" | "kicked";

/** Why a lock was released (`LOCK` event with `owner: null`). */
export type LockReleaseReason = "released" | "expired" | "force_released";

/** One session of a member, as the server renders it. */
export interface WireSession {
  sessionId: string;
  device: string;
  os: string | null;
  appVersion: string | null;
  latencyMs: number | null;
  joinedAt: string;
  state: PresenceState;
}

/** A user in a `PRESENCE` snapshot (grouped by user). */
export interface WireUser {
  userId: string;
  name?: string;
  info?: Json;
  status: UserStatus;
  sessions: WireSession[];
}

/** One session in the `joins` / `updates` of a `PRESENCE_DIFF`. */
export interface WireMember {
  userId: string;
  name?: string;
  info?: Json;
  status: UserStatus;
  session: WireSession;
}

export interface WireLeave {
  userId: string;
  sessionId: string;
  reason: LeaveReason;
}

/** The holder of a field lock. */
export interface LockOwner {
  userId: string;
  sessionId: string;
  expiresAt: string;
}

/** Status of a watched user. */
export interface WireUserStatus {
  status: UserStatus;
  lastSeen: string | null;
  devices: string[];
}

export type Ref = string | number;

// ---------------------------------------------------------------------------
// Server → client

export interface WelcomeMessage {
  type: "WELCOME";
  ref?: Ref;
  sessionId: string;
  userId: string;
  tenantId: string;
  heartbeatIntervalMs: number;
  sessionTimeoutMs: number;
  /** The server's `leave_grace` (older servers omit it). */
  leaveGraceMs?: number;
  serverTime: string;
  resumed: boolean;
  rooms: string[];
}

export interface PresenceMessage {
  type: "PRESENCE";
  ref?: Ref;
  room: string;
  seq: number;
  count: number;
  users: WireUser[];
  stale: boolean;
  busyBy: string | null;
  version: number;
  locks: Record<string, LockOwner>;
  /** The room's own heartbeat interval, when its type sets one (else WELCOME's). */
  heartbeatIntervalMs?: number;
}

export interface PresenceCountMessage {
  type: "PRESENCE_COUNT";
  ref?: Ref;
  room: string;
  count: number;
  seq: number;
}

export interface PresenceDiffMessage {
  type: "PRESENCE_DIFF";
  room: string;
  seq: number;
  joins: WireMember[];
  leaves: WireLeave[];
  updates: WireMember[];
}

export interface UnsubAckMessage {
  type: "UNSUB_ACK";
  ref?: Ref;
  room: string;
}

export interface HbAckMessage {
  type: "HB_ACK";
  ref?: Ref;
  t: Json;
  serverTime: string;
}

export interface LockAckMessage {
  type: "LOCK_ACK";
  ref?: Ref;
  room: string;
  field: string;
  success: boolean;
  owner: LockOwner | null;
  expiresAt: string | null;
}

export interface UnlockAckMessage {
  type: "UNLOCK_ACK";
  ref?: Ref;
  room: string;
  field: string;
  success: boolean;
}

export interface LockEventMessage {
  type: "LOCK";
  room: string;
  field: string;
  owner: LockOwner | null;
  reason?: LockReleaseReason;
}

export interface EntityMessage {
  type: "ENTITY";
  room: string;
  stale: boolean;
  busyBy: string | null;
  version: number;
}

export interface StatusSnapshotMessage {
  type: "STATUS_SNAPSHOT";
  ref?: Ref;
  users: Record<string, WireUserStatus>;
}

export interface StatusEventMessage extends WireUserStatus {
  type: "STATUS";
  userId: string;
}

/** Who sent a room event: the member's user and the very session (tab/device) that emitted it. */
export interface EventSender {
  userId: string;
  sessionId: string;
}

/** An ephemeral room event: another member's `EMIT` (never this session's own), or the back end's. */
export interface EventMessage {
  type: "EVENT";
  room: string;
  /** The event name (1–64 characters). */
  event: string;
  data: Json;
  /** The member that emitted it; `null` for an event of the back end (e.g. Pusher's HTTP API `trigger`). */
  from: EventSender | null;
}

export interface ErrorMessage {
  type: "ERROR";
  ref?: Ref;
  code: string;
  message: string;
}

export type ServerMessage =
  | WelcomeMessage
  | PresenceMessage
  | PresenceCountMessage
  | PresenceDiffMessage
  | UnsubAckMessage
  | HbAckMessage
  | LockAckMessage
  | UnlockAckMessage
  | LockEventMessage
  | EntityMessage
  | StatusSnapshotMessage
  | StatusEventMessage
  | EventMessage
  | ErrorMessage;

// ---------------------------------------------------------------------------
// Client → server

export type RoomMode = "list" | "count";

export type ClientMessage =
  | {
      type: "HELLO";
      token?: string;
      device?: string;
      os?: string;
      appVersion?: string;
      clientId?: string;
    }
  | { type: "SUB"; room: string; state?: PresenceState; mode?: RoomMode }
  | { type: "UNSUB"; room: string }
  | { type: "HB"; t?: Json; active?: boolean; latencyMs?: number }
  | { type: "STATE"; room: string; state: PresenceState }
  | { type: "STATUS"; status: "online" | "away" }
  | { type: "LOCK"; room: string; field: string }
  | { type: "UNLOCK"; room: string; field: string }
  | { type: "WATCH"; users: string[] }
  | { type: "UNWATCH"; users: string[] }
  | { type: "EMIT"; room: string; event: string; data: Json }
  | { type: "BYE" };

/** Room keys accepted by the server: `[A-Za-z0-9_.:\-/@]{1,200}`. */
export const ROOM_KEY_PATTERN = /^[A-Za-z0-9_.:\-/@]{1,200}$/;

/** Longest `EMIT` event name, in characters (Unicode code points). */
export const MAX_EVENT_NAME_LENGTH = 64;

/**
 * Largest `EMIT.data`, in bytes of its JSON (UTF-8): the server's default
 * `max_state_bytes`, which bounds member state too.
 */
export const MAX_EVENT_DATA_BYTES = 2048;
