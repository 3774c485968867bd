import { formatLastSeen, type FormatLastSeenOptions } from "@roster/client";
import { useEffect, useReducer, type ReactNode } from "react";
import { cx } from "./util.js";

export interface LastSeenProps {
  /** When the user was last seen (`WatchedStatus.lastSeen`); `null` for never. */
  date: Date | string | number | null | undefined;
  /** BCP 47 locale(s); default the user's (`navigator.languages`). */
  locale?: string | string[];
  style?: FormatLastSeenOptions["style"];
  numeric?: FormatLastSeenOptions["numeric"];
  className?: string;
  /** Shown when `date` is `null` (never seen); default nothing. */
  fallback?: ReactNode;
  /** Re-render interval in ms (default 60 000: once a minute). */
  updateIntervalMs?: number;
}

/** The user's locale(s) where there is a `navigator`, else the runtime's default. */
export function userLocale(): string | string[] | undefined {
  const nav = (globalThis as { navigator?: { languages?: readonly string[]; language?: string } }).navigator;
  if (nav?.languages && nav.languages.length > 0) return [...nav.languages];
  return nav?.language || undefined;
}

function toDate(d: Date | string | number): Date {
  return d instanceof Date ? d : new Date(d);
}

/**
 * "5 minutes ago" / "vor 5 Minuten" (the client's `formatLastSeen`, in the user's
 * locale), in a `<time>` with the exact date as `dateTime` and `title`; re-renders
 * every minute. Class `roster-last-seen` (`roster-last-seen--never` for the
 * fallback).
 */
export function LastSeen(props: LastSeenProps): ReactNode {
  const { date, updateIntervalMs = 60_000 } = props;
  const [, tick] = useReducer((n: number) => n + 1, 0);
  const known = date !== null && date !== undefined;

  useEffect(() => {
    if (!known || !(updateIntervalMs > 0)) return;
    const t = setInterval(tick, updateIntervalMs);
    return () => clearInterval(t);
  }, [known, updateIntervalMs]);

  const locale = props.locale ?? userLocale();
  const opts: FormatLastSeenOptions = {};
  if (props.style) opts.style = props.style;
  if (props.numeric) opts.numeric = props.numeric;
  const text = known ? formatLastSeen(date, locale, opts) : "";
  if (!text) {
    if (props.fallback === undefined || props.fallback === null) return null;
    return <span className={cx("roster-last-seen", "roster-last-seen--never", props.className)}>{props.fallback}</span>;
  }
  const d = toDate(date!);
  let title: string | undefined;
  try {
    title = d.toLocaleString(locale);
  } catch {
    title = d.toISOString();
  }
  return (
    <time className={cx("roster-last-seen", props.className)} dateTime={d.toISOString()} title={title}>
      {text}
    </time>
  );
}
