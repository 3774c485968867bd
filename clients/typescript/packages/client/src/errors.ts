/**
 * Every `ERROR.code` the server defines (docs/PROTOCOL.md §5), in table order.
 */
export const SERVER_ERROR_CODES = [
  "invalid_json",
  "bad_request",
  "unknown_type",
  "not_authenticated",
  "auth_failed",
  "invalid_room",
  "state_too_large",
  "not_subscribed",
  "room_full",
  "room_closed",
  "forbidden",
  "too_many_rooms",
  "too_many_watched",
  "not_lock_owner",
  "rate_limited",
  "too_many_errors",
  "internal",
] as const;

/** A code the server sends in `ERROR.code`. */
export type ServerErrorCode = (typeof SERVER_ERROR_CODES)[number];

/** Failures detected by the client itself, never sent by the server. */
export const CLIENT_ERROR_CODES = [
  /** No reply within `requestTimeoutMs`. */
  "timeout",
  /** The connection closed before the reply arrived; the request may or may not have run. */
  "connection_closed",
  /** `disconnect()` was called (or the client was closed for good) while the request waited. */
  "client_closed",
  /** The reconnect budget (`reconnect.maxAttempts`) is exhausted. */
  "max_attempts",
  /** The server kicked this session (close 4011). */
  "kicked",
  /** The token provider threw or returned no token. */
  "token_unavailable",
  /** A room handle was used after `leave()`. */
  "room_left",
  /** No WebSocket implementation: pass the `WebSocket` option. */
  "no_websocket",
  /** The server sent something this client cannot read. */
  "protocol",
  /** `room.emit()` with a bad event name (1–64 characters, no control characters) or data that is not JSON. */
  "invalid_event",
  /** `room.emit()` with data whose JSON is above 2 KiB (the server would answer `state_too_large`). */
  "event_too_large",
] as const;

export type ClientErrorCode = (typeof CLIENT_ERROR_CODES)[number];

/** Every code a {@link RosterError} can carry. */
export type RosterErrorCode = ServerErrorCode | ClientErrorCode;

/** WebSocket close codes used by the server (docs/PROTOCOL.md §7). */
export const CloseCode = {
  Normal: 1000,
  GoingAway: 1001,
  Unsupported: 1003,
  Abnormal: 1006,
  InvalidPayload: 1007,
  TooBig: 1009,
  AuthFailed: 4001,
  SessionTimeout: 4008,
  SlowConsumer: 4009,
  TooManyErrors: 4010,
  Kicked: 4011,
  Replaced: 4012,
} as const;

const SERVER_CODES: ReadonlySet<string> = new Set(SERVER_ERROR_CODES);

/** An error from the server (`ERROR` frame) or from the client's own bookkeeping. */
export class RosterError extends Error {
  override readonly name = "RosterError";
  readonly code: RosterErrorCode;
  /** The `ref` of the request this error answers, when there is one. */
  readonly ref?: string | number;
  /** The request type that failed (`SUB`, `LOCK`, …), when known. */
  readonly request?: string;
  /** Room key of the failed request, when it concerned a room. */
  readonly room?: string;

  constructor(
    code: RosterErrorCode,
    message: string,
    extra: { ref?: string | number; request?: string; room?: string } = {},
  ) {
    super(message);
    this.code = code;
    if (extra.ref !== undefined) this.ref = extra.ref;
    if (extra.request !== undefined) this.request = extra.request;
    if (extra.room !== undefined) this.room = extra.room;
  }

  /** True when the code came in an `ERROR` frame from the server. */
  get fromServer(): boolean {
    return SERVER_CODES.has(this.code);
  }
}

/** Narrows an unknown error to a {@link RosterError}, optionally of one code. */
export function isRosterError<C extends RosterErrorCode>(
  e: unknown,
  code?: C,
): e is RosterError & { code: C } {
  return e instanceof RosterError && (code === undefined || e.code === code);
}

/** Whether `code` is one the server defines. Unknown codes are kept as `protocol`. */
export function isServerErrorCode(code: string): code is ServerErrorCode {
  return SERVER_CODES.has(code);
}
