import { describe, expect, it } from "vitest";
import { formatLastSeen } from "../../src/lastSeen.js";

const NOW = new Date("2026-11-26T12:00:00.000Z").getTime();
const ago = (ms: number) => new Date(NOW - ms);
const S = 1000;
const M = 60 * S;
const H = 60 * M;
const D = 24 * H;

describe("formatLastSeen", () => {
  it("uses Intl.RelativeTimeFormat in English", () => {
    const f = (d: Date) => formatLastSeen(d, "en", { now: NOW });
    expect(f(ago(2 * S))).toBe("now");
    expect(f(ago(30 * S))).toBe("30 seconds ago");
    expect(f(ago(59 * S + 900))).toBe("59 seconds ago");
    expect(f(ago(60 * S))).toBe("1 minute ago");
    expect(f(ago(119 * S))).toBe("1 minute ago");
    expect(f(ago(5 * M))).toBe("5 minutes ago");
    expect(f(ago(3 * H + 59 * M))).toBe("3 hours ago");
    expect(f(ago(D + 2 * H))).toBe("yesterday");
    expect(f(ago(3 * D))).toBe("3 days ago");
    expect(f(ago(14 * D))).toBe("2 weeks ago");
    expect(f(ago(65 * D))).toBe("2 months ago");
    expect(f(ago(800 * D))).toBe("2 years ago");
  });

  it("follows the locale", () => {
    expect(formatLastSeen(ago(5 * M), "de", { now: NOW })).toBe("vor 5 Minuten");
    expect(formatLastSeen(ago(D + H), "de", { now: NOW })).toBe("gestern");
    expect(formatLastSeen(ago(3 * H), "fr", { now: NOW })).toBe("il y a 3 heures");
    expect(formatLastSeen(ago(2 * S), "es", { now: NOW })).toBe("ahora");
  });

  it("accepts ISO strings and epoch ms, and options", () => {
    expect(formatLastSeen("2026-11-26T11:55:00.000Z", "en", { now: NOW })).toBe("5 minutes ago");
    expect(formatLastSeen(NOW - 2 * H, "en", { now: new Date(NOW) })).toBe("2 hours ago");
    expect(formatLastSeen(ago(2 * S), "en", { now: NOW, numeric: "always" })).toBe("2 seconds ago");
    expect(formatLastSeen(ago(5 * M), "en", { now: NOW, style: "short" })).toBe("5 min. ago");
  });

  it("renders nothing for a user never seen or an invalid date", () => {
    expect(formatLastSeen(null, "en")).toBe("");
    expect(formatLastSeen(undefined, "en")).toBe("");
    expect(formatLastSeen("not a date", "en")).toBe("");
  });

  it("defaults to now as the reference", () => {
    expect(formatLastSeen(new Date(), "en")).toBe("now");
  });
});
