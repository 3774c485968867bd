import type { Member } from "@roster/client";
import type { CSSProperties, ReactNode } from "react";

/** Joins class names, skipping empty ones. */
export function cx(...names: Array<string | false | null | undefined>): string {
  return names.filter(Boolean).join(" ");
}

/** Custom properties are not in `CSSProperties`. */
export type StyleWithVars = CSSProperties & Record<`--${string}`, string | number>;

/** A member's display name: `name` from the token, else the user id. */
export function displayName(m: Pick<Member, "userId" | "name">): string {
  return m.name && m.name.trim() ? m.name : m.userId;
}

/** "Ada Lovelace" → "AL", "bob" → "B", "jean-luc" → "JL". */
export function initials(name: string): string {
  const words = name
    .trim()
    .split(/[\s\-_.@]+/u)
    .filter(Boolean);
  if (words.length === 0) return "?";
  const first = [...words[0]!][0] ?? "";
  const last = words.length > 1 ? ([...words[words.length - 1]!][0] ?? "") : "";
  return (first + last).toUpperCase();
}

/** A stable hue (0–359) per user, for `--roster-avatar-hue`. */
export function hueOf(userId: string): number {
  let h = 0;
  for (let i = 0; i < userId.length; i++) h = (h * 31 + userId.charCodeAt(i)) >>> 0;
  return h % 360;
}

/** An avatar image URL from the token's `info` (`avatar`, `avatarUrl`, `picture` or `image`). */
export function avatarUrl(m: Pick<Member, "info">): string | null {
  const info = m.info;
  if (!info || typeof info !== "object" || Array.isArray(info)) return null;
  for (const k of ["avatarUrl", "avatar", "picture", "image"]) {
    const v = (info as Record<string, unknown>)[k];
    if (typeof v === "string" && v) return v;
  }
  return null;
}

/** Distinct device kinds of a member's sessions, in session order. */
export function devicesOf(m: Pick<Member, "sessions">): string[] {
  return [...new Set(m.sessions.map((s) => s.device))];
}

const DEVICE_NAMES: Record<string, string> = {
  web: "web",
  desktop: "desktop",
  mobile: "mobile",
  tablet: "tablet",
};

/** English name of a device kind for labels (unknown kinds as they are). */
export function deviceName(device: string): string {
  return DEVICE_NAMES[device] ?? device;
}

/** "a", "a and b", "a, b and c". */
export function listText(items: readonly string[]): string {
  if (items.length <= 1) return items[0] ?? "";
  return `${items.slice(0, -1).join(", ")} and ${items[items.length - 1]}`;
}

const stroke = { fill: "none", stroke: "currentColor", strokeWidth: 1.5, strokeLinecap: "round", strokeLinejoin: "round" } as const;

const SHAPES: Record<string, ReactNode> = {
  mobile: (
    <>
      <rect x="4.5" y="1.5" width="7" height="13" rx="1.5" {...stroke} />
      <path d="M7 12.5h2" {...stroke} />
    </>
  ),
  tablet: (
    <>
      <rect x="2.5" y="1.5" width="11" height="13" rx="1.5" {...stroke} />
      <path d="M7 12.5h2" {...stroke} />
    </>
  ),
  desktop: (
    <>
      <rect x="1.5" y="2.5" width="13" height="8.5" rx="1" {...stroke} />
      <path d="M5.5 14h5M8 11v3" {...stroke} />
    </>
  ),
  web: (
    <>
      <circle cx="8" cy="8" r="6.5" {...stroke} />
      <path d="M1.5 8h13M8 1.5c2 2 2.8 4.2 2.8 6.5S10 12.5 8 14.5M8 1.5C6 3.5 5.2 5.7 5.2 8S6 12.5 8 14.5" {...stroke} />
    </>
  ),
};

/**
 * A small inline SVG of a device kind (`web`, `desktop`, `mobile`, `tablet`);
 * decorative (`aria-hidden`): say the device in the surrounding label. Nothing for
 * unknown kinds.
 */
export function DeviceIcon({ device, className }: { device: string; className?: string | undefined }): ReactNode {
  const shape = SHAPES[device];
  if (!shape) return null;
  return (
    <svg
      className={cx("roster-device", `roster-device--${device}`, className)}
      viewBox="0 0 16 16"
      width="1em"
      height="1em"
      aria-hidden="true"
      focusable="false"
      data-device={device}
    >
      {shape}
    </svg>
  );
}
