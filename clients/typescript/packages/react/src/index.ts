export { RosterContext, RosterProvider, useConnectionStatus, useRoster, useRosterClient } from "./context.js";
export type { RosterProviderProps, UseRosterResult } from "./context.js";
export {
  useEmit,
  useEntityState,
  useErrorListener,
  useEventListener,
  useFieldLock,
  useLockState,
  useMyState,
  useOnlineStatus,
  useOther,
  useOthers,
  usePresence,
  useUserStatus,
} from "./hooks.js";
export type {
  EmitFn,
  FieldLock,
  FieldLockBindings,
  LockState,
  PresenceResult,
  SetMyState,
  UpdateMyState,
} from "./hooks.js";
export { shallowEqual } from "./selector.js";
export type { EqualityFn } from "./selector.js";
export { isRoom } from "./room.js";
export type { RoomInput } from "./room.js";
export { PresenceIndicator } from "./components/PresenceIndicator.js";
export type { PresenceIndicatorProps } from "./components/PresenceIndicator.js";
export { FieldLockIndicator } from "./components/FieldLockIndicator.js";
export type { FieldLockIndicatorProps } from "./components/FieldLockIndicator.js";
export { LastSeen, userLocale } from "./components/LastSeen.js";
export type { LastSeenProps } from "./components/LastSeen.js";
export { DeviceIcon, initials } from "./components/util.js";
