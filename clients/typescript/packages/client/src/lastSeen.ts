/**
 * "5 minutes ago" / "vor 5 Minuten" / "à l'instant" with `Intl.RelativeTimeFormat`.
 */

export interface FormatLastSeenOptions {
  /** Reference time (default: now). */
  now?: Date | number;
  /** `Intl.RelativeTimeFormat` style (default `long`). */
  style?: "long" | "short" | "narrow";
  /** `auto` (default) says "yesterday"/"now"; `always` says "1 day ago"/"in 0 seconds". */
  numeric?: "auto" | "always";
}

type Unit = "second" | "minute" | "hour" | "day" | "week" | "month" | "year";

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
const WEEK = 7 * DAY;
const MONTH = 30 * DAY;
const YEAR = 365 * DAY;

// Below each bound, the unit beside it is used.
const STEPS: Array<[number, Unit, number]> = [
  [MINUTE, "second", SECOND],
  [HOUR, "minute", MINUTE],
  [DAY, "hour", HOUR],
  [WEEK, "day", DAY],
  [MONTH, "week", WEEK],
  [YEAR, "month", MONTH],
  [Number.POSITIVE_INFINITY, "year", YEAR],
];

const formatters = new Map<string, Intl.RelativeTimeFormat>();

function formatter(locale: string | string[] | undefined, style: string, numeric: string): Intl.RelativeTimeFormat {
  const key = `${Array.isArray(locale) ? locale.join(",") : (locale ?? "")}|${style}|${numeric}`;
  let f = formatters.get(key);
  if (!f) {
    f = new Intl.RelativeTimeFormat(locale, {
      style: style as Intl.RelativeTimeFormatStyle,
      numeric: numeric as Intl.RelativeTimeFormatNumeric,
    });
    formatters.set(key, f);
  }
  return f;
}

/**
 * Renders `date` relative to now in `locale` (default: the runtime's locale).
 * Anything under 10 seconds is "now" (with `numeric: "auto"`). Returns `""` for
 * `null`/`undefined`/an invalid date, so `lastSeen: null` ("never seen") renders
 * as nothing; the application chooses its own wording for that case.
 */
export function formatLastSeen(
  date: Date | string | number | null | undefined,
  locale?: string | string[],
  options: FormatLastSeenOptions = {},
): string {
  if (date === null || date === undefined) return "";
  const t = date instanceof Date ? date.getTime() : new Date(date).getTime();
  if (!Number.isFinite(t)) return "";
  const now = options.now === undefined ? Date.now() : options.now instanceof Date ? options.now.getTime() : options.now;
  const numeric = options.numeric ?? "auto";
  const f = formatter(locale, options.style ?? "long", numeric);
  const delta = t - now; // negative: in the past
  const abs = Math.abs(delta);
  if (abs < 10 * SECOND && numeric === "auto") return f.format(0, "second");
  const sign = delta < 0 ? -1 : 1;
  for (const [bound, unit, size] of STEPS) {
    if (abs < bound) {
      // Truncated, as people say it: 119 s ago is "1 minute ago", never "60 seconds ago".
      return f.format(sign * Math.floor(abs / size), unit);
    }
  }
  /* c8 ignore next */
  return f.format(sign * Math.floor(abs / YEAR), "year");
}
