import type { ReactNode } from "react";
import { useLockState, type LockState } from "../hooks.js";
import type { RoomInput } from "../room.js";
import { cx } from "./util.js";

export interface FieldLockIndicatorProps {
  room: RoomInput;
  field: string;
  className?: string;
  /** Also say so when this session holds the lock (default `false`). */
  showMine?: boolean;
  /** The text to show (default "Ada is editing" / "You are editing" / nothing). */
  children?: (lock: LockState) => ReactNode;
}

function defaultText(lock: LockState, showMine: boolean): ReactNode {
  if (lock.lockedByOther) return `${lock.ownerName} is editing`;
  if (lock.lockedByMe && showMine) return "You are editing";
  return null;
}

/**
 * Who holds the lock on a field, in a polite live region (screen readers announce
 * when someone starts editing). Always rendered, empty while the field is free,
 * so that the announcement is not lost. Classes `roster-field-lock`,
 * `roster-field-lock--{free|mine|other}`; `data-state` likewise.
 */
export function FieldLockIndicator(props: FieldLockIndicatorProps): ReactNode {
  const lock = useLockState(props.room, props.field);
  const state = lock.lockedByOther ? "other" : lock.lockedByMe ? "mine" : "free";
  const content = props.children ? props.children(lock) : defaultText(lock, props.showMine ?? false);
  return (
    <span
      className={cx("roster-field-lock", `roster-field-lock--${state}`, props.className)}
      role="status"
      aria-live="polite"
      aria-atomic="true"
      data-state={state}
      data-field={props.field}
    >
      {content}
    </span>
  );
}
