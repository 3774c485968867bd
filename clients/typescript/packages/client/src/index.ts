export { RosterClient, normalizeUrl } from "./client.js";
export type {
  ClientEvents,
  ClosedEvent,
  ConnectingEvent,
  ConnectionState,
  HeartbeatOptions,
  ReconnectingEvent,
  RosterClientOptions,
  StateChange,
  TokenProvider,
  WebSocketConstructor,
  WebSocketLike,
} from "./client.js";
export { Room, roomKey } from "./room.js";
export type {
  EntityState,
  LockChange,
  LockResult,
  RoomAddress,
  RoomEvent,
  RoomEvents,
  RoomOptions,
  RoomSnapshot,
  RoomStatus,
} from "./room.js";
export { RosterState } from "./roster.js";
export type {
  DiffOutcome,
  JoinChange,
  LeaveChange,
  Member,
  RosterChange,
  Session,
  UpdateChange,
} from "./roster.js";
export { Watch } from "./watch.js";
export type { WatchEvents, WatchStatusChange, WatchedStatus } from "./watch.js";
export {
  CLIENT_ERROR_CODES,
  CloseCode,
  RosterError,
  SERVER_ERROR_CODES,
  isRosterError,
  isServerErrorCode,
} from "./errors.js";
export type { ClientErrorCode, RosterErrorCode, ServerErrorCode } from "./errors.js";
export { Backoff, backoffCeiling, fullJitterDelay, DEFAULT_RECONNECT } from "./backoff.js";
export type { ReconnectOptions } from "./backoff.js";
export { Throttle } from "./throttle.js";
export { ActivityTracker, ACTIVITY_EVENTS } from "./activity.js";
export type {
  ActivityDocument,
  ActivityEventTarget,
  ActivityTrackerOptions,
} from "./activity.js";
export { stableClientId, DEFAULT_CLIENT_ID_KEY } from "./clientId.js";
export type { StorageLike } from "./clientId.js";
export { formatLastSeen } from "./lastSeen.js";
export type { FormatLastSeenOptions } from "./lastSeen.js";
export { Emitter } from "./emitter.js";
export type { Listener, Unsubscribe } from "./emitter.js";
export { MAX_EVENT_DATA_BYTES, MAX_EVENT_NAME_LENGTH, ROOM_KEY_PATTERN } from "./protocol.js";
export type * from "./protocol.js";
