import type { Member } from "@roster/client";
import type { ReactNode } from "react";
import { usePresence } from "../hooks.js";
import type { RoomInput } from "../room.js";
import { DeviceIcon, avatarUrl, cx, devicesOf, deviceName, displayName, hueOf, initials, listText, type StyleWithVars } from "./util.js";

export interface PresenceIndicatorProps {
  /** The room to show (held while mounted); or pass `members`. */
  room?: RoomInput;
  /** Members to show instead of a room's. */
  members?: readonly Member[];
  /** Show this session's user too (default `false`: only the others). */
  includeSelf?: boolean;
  /** Avatars shown before the "+N" overflow (default 5). */
  max?: number;
  /** Avatar size: a number of pixels or a CSS length; sets `--roster-avatar-size` (default 32). */
  size?: number | string;
  className?: string;
  /** Accessible name of the list (default "3 people here"). */
  label?: (members: readonly Member[]) => string;
  /** Accessible name of one avatar (default "Ada Lovelace, online, on web and mobile"). */
  memberLabel?: (member: Member) => string;
  /** Accessible name of the overflow (default "2 more: Bob and Carol"). */
  overflowLabel?: (hidden: readonly Member[]) => string;
  /** Renders the face of an avatar (default: the `info.avatarUrl` image, else initials). */
  renderAvatar?: (member: Member) => ReactNode;
}

function defaultLabel(members: readonly Member[]): string {
  const n = members.length;
  return n === 0 ? "Nobody here" : n === 1 ? "1 person here" : `${n} people here`;
}

function defaultMemberLabel(m: Member): string {
  const devices = devicesOf(m).filter((d) => d !== "unknown").map(deviceName);
  return `${displayName(m)}, ${m.status}${devices.length ? `, on ${listText(devices)}` : ""}`;
}

function defaultOverflowLabel(hidden: readonly Member[]): string {
  return `${hidden.length} more: ${listText(hidden.map(displayName))}`;
}

function Face({ member }: { member: Member }): ReactNode {
  const url = avatarUrl(member);
  if (url) return <img className="roster-avatar__image" src={url} alt="" draggable={false} />;
  return <span className="roster-avatar__initials">{initials(displayName(member))}</span>;
}

/**
 * Who is here: one avatar per user (image or initials, with an icon per device
 * the user is on and a status class), then "+N" for the rest. Unstyled: class
 * names `roster-presence`, `roster-avatar`, `roster-avatar--{status}`,
 * `roster-avatar__initials`, `roster-avatar__image`, `roster-avatar__devices`,
 * `roster-device--{kind}`, `roster-presence__overflow`; custom properties
 * `--roster-avatar-size` and `--roster-avatar-hue` (per user). Import
 * `@roster/react/styles.css` for a default look.
 */
export function PresenceIndicator(props: PresenceIndicatorProps): ReactNode {
  const { max = 5, size = 32, includeSelf = false } = props;
  const presence = usePresence(props.members ? null : props.room);
  const members = props.members ?? (includeSelf ? presence.members : presence.others);
  const limit = Math.max(0, Math.floor(max));
  const shown = members.length > limit ? members.slice(0, limit) : members;
  const hidden = members.length > limit ? members.slice(limit) : [];
  const memberLabel = props.memberLabel ?? defaultMemberLabel;
  const style: StyleWithVars = { "--roster-avatar-size": typeof size === "number" ? `${size}px` : size };

  return (
    <div
      className={cx("roster-presence", props.className)}
      role="list"
      aria-label={(props.label ?? defaultLabel)(members)}
      style={style}
      data-count={members.length}
    >
      {shown.map((m) => {
        const devices = devicesOf(m);
        const itemStyle: StyleWithVars = { "--roster-avatar-hue": hueOf(m.userId) };
        return (
          <div
            key={m.userId}
            role="listitem"
            className={cx("roster-avatar", `roster-avatar--${m.status}`)}
            aria-label={memberLabel(m)}
            title={displayName(m)}
            data-user-id={m.userId}
            data-status={m.status}
            style={itemStyle}
          >
            <span className="roster-avatar__face" aria-hidden="true">
              {props.renderAvatar ? props.renderAvatar(m) : <Face member={m} />}
            </span>
            {devices.length > 0 && (
              <span className="roster-avatar__devices" aria-hidden="true">
                {devices.map((d) => (
                  <DeviceIcon key={d} device={d} />
                ))}
              </span>
            )}
          </div>
        );
      })}
      {hidden.length > 0 && (
        <div
          role="listitem"
          className="roster-presence__overflow"
          aria-label={(props.overflowLabel ?? defaultOverflowLabel)(hidden)}
          title={hidden.map(displayName).join(", ")}
        >
          <span aria-hidden="true">+{hidden.length}</span>
        </div>
      )}
    </div>
  );
}
