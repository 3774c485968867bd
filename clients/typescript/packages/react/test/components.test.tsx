/**
 * The components, fed by real users on the real `roster` server
 * (test-support/globalSetup.ts); pure rendering (`initials`, `LastSeen` on a fake
 * clock) is checked without a server.
 */
import { act, render, screen, waitFor, within } from "@testing-library/react";
import type { ReactNode } from "react";
import { afterEach, describe, expect, it, vi } from "vitest";
import { FieldLockIndicator, LastSeen, PresenceIndicator, initials, useUserStatus } from "../src/index.js";
import { renderWith } from "./helpers/render.js";
import { clientOf, newOrder, uid, user, type TestUser } from "./helpers/roster.js";

const newRoom = () => `Order:${newOrder().id}`;

/** Connects `users` at once, then joins `key` one after the other (so that the
 * viewer sees them in this order), waiting until the viewer counts each. */
async function joinInOrder(viewer: TestUser, key: string, users: TestUser[]): Promise<void> {
  await Promise.all(users.map((u) => u.client.connect()));
  const seen = () => viewer.client.openRooms.get(key)?.count ?? 0;
  for (const u of users) {
    const before = seen();
    u.client.room(key);
    await waitFor(() => expect(seen()).toBe(before + 1));
  }
}

describe("PresenceIndicator", () => {
  it("shows `max` avatars and a +N overflow, as an accessible list", async () => {
    const viewer = user("viewer");
    const key = newRoom();
    renderWith(viewer.client, <PresenceIndicator room={key} max={3} size={24} />);
    await waitFor(() => expect(viewer.client.openRooms.get(key)?.status).toBe("joined"));
    const ada = uid("ada");
    const bob = uid("bob");
    const people = [
      clientOf(ada, { name: "Ada Lovelace", device: "web" }),
      clientOf(ada, { name: "Ada Lovelace", device: "mobile" }),
      clientOf(bob, { name: "Bob", device: "tablet" }),
      clientOf(uid("carol"), { name: "Carol Shaw", device: "desktop" }),
      clientOf(uid("dave"), { name: "Dave" }),
      clientOf(uid("eve"), { name: "Eve" }),
      clientOf(uid("frank"), { name: "Frank" }),
      clientOf(uid("grace"), { name: "Grace Hopper" }),
    ];
    // Bob is away (explicitly, from before he joins).
    people[2]!.client.setStatus("away");
    await joinInOrder(viewer, key, people);

    const list = screen.getByRole("list");
    const labels = () => within(list).getAllByRole("listitem").map((i) => i.getAttribute("aria-label"));
    await waitFor(() =>
      expect(labels()).toEqual([
        "Ada Lovelace, online, on web and mobile",
        "Bob, away, on tablet",
        "Carol Shaw, online, on desktop",
        "4 more: Dave, Eve, Frank and Grace Hopper",
      ]),
    );
    expect(list.getAttribute("aria-label")).toBe("7 people here");
    expect(list.className).toBe("roster-presence");
    expect(list.style.getPropertyValue("--roster-avatar-size")).toBe("24px");
    const items = within(list).getAllByRole("listitem");
    expect(items).toHaveLength(4);
    expect(items[0]!.textContent).toBe("AL");
    expect(items[0]!.getAttribute("data-user-id")).toBe(ada);
    expect(items[0]!.className).toBe("roster-avatar roster-avatar--online");
    expect(items[1]!.className).toBe("roster-avatar roster-avatar--away");
    expect(items[0]!.style.getPropertyValue("--roster-avatar-hue")).toMatch(/^\d+$/);
    // One decorative icon per device kind.
    expect([...items[0]!.querySelectorAll("svg")].map((s) => s.getAttribute("data-device"))).toEqual(["web", "mobile"]);
    expect(items[0]!.querySelector("svg")!.getAttribute("aria-hidden")).toBe("true");
    expect(items[3]!.className).toBe("roster-presence__overflow");
    expect(items[3]!.textContent).toBe("+4");
  });

  it("no overflow when everyone fits; custom labels and avatar images (the token's info.avatarUrl)", async () => {
    const viewer = user("viewer");
    const key = newRoom();
    renderWith(
      viewer.client,
      <PresenceIndicator room={key} label={(m) => `${m.length} Personen`} memberLabel={(m) => `Avatar ${m.userId}`} />,
    );
    await waitFor(() => expect(viewer.client.openRooms.get(key)?.status).toBe("joined"));
    const zoe = user("zoe", { name: "Zoe", info: { avatarUrl: "https://example.test/zoe.png" } });
    // No name: the initials come from the user id.
    const yann = clientOf(uid("yann").replace("-", ""));
    await joinInOrder(viewer, key, [zoe, yann]);

    const list = await screen.findByRole("list", { name: "2 Personen" });
    const items = within(list).getAllByRole("listitem");
    expect(items.map((i) => i.getAttribute("aria-label"))).toEqual([`Avatar ${zoe.id}`, `Avatar ${yann.id}`]);
    expect(items[0]!.querySelector("img")!.getAttribute("src")).toBe("https://example.test/zoe.png");
    expect(items[0]!.querySelector("img")!.getAttribute("alt")).toBe("");
    expect(items[1]!.textContent).toBe("Y");
  });

  it("follows a room: the others join and leave, this session is left out (or not, with includeSelf)", async () => {
    const alice = user("alice");
    const key = newRoom();
    renderWith(
      alice.client,
      <>
        <PresenceIndicator room={key} label={(m) => `others ${m.length}`} />
        <PresenceIndicator room={key} includeSelf label={(m) => `all ${m.length}`} />
      </>,
    );
    await waitFor(() => expect(screen.getByRole("list", { name: "all 1" })).toBeTruthy());
    expect(within(screen.getByRole("list", { name: "others 0" })).queryAllByRole("listitem")).toHaveLength(0);

    const bob = user("bob", { name: "Bob Builder", device: "mobile" });
    await bob.client.connect();
    const room = bob.client.room(key);
    await waitFor(() => expect(screen.getByRole("list", { name: "others 1" })).toBeTruthy());
    const item = within(screen.getByRole("list", { name: "others 1" })).getByRole("listitem");
    await waitFor(() => expect(item.getAttribute("aria-label")).toBe("Bob Builder, online, on mobile"));
    expect(item.textContent).toBe("BB");
    expect(screen.getByRole("list", { name: "all 2" })).toBeTruthy();

    await room.leave();
    await waitFor(() => expect(screen.getByRole("list", { name: "others 0" })).toBeTruthy());
    expect(screen.getByRole("list", { name: "all 1" })).toBeTruthy();
  });

  it("initials", () => {
    expect(initials("Ada Lovelace")).toBe("AL");
    expect(initials("jean-luc picard")).toBe("JP");
    expect(initials("bob")).toBe("B");
    expect(initials("émile zola")).toBe("ÉZ");
    expect(initials("  ")).toBe("?");
  });
});

describe("FieldLockIndicator", () => {
  it("says who holds the field, in a polite live region", async () => {
    const alice = user("alice");
    const key = newRoom();
    renderWith(
      alice.client,
      <>
        <FieldLockIndicator room={key} field="total" />
        <FieldLockIndicator room={key} field="note" showMine />
      </>,
    );
    await waitFor(() => expect(alice.client.openRooms.get(key)?.status).toBe("joined"));
    const [total, note] = screen.getAllByRole("status");
    expect(total!.getAttribute("aria-live")).toBe("polite");
    expect(total!.textContent).toBe("");
    expect(total!.className).toBe("roster-field-lock roster-field-lock--free");

    const bob = user("bob", { name: "Bob" });
    await bob.client.connect();
    const room = bob.client.room(key);
    await waitFor(() => expect(room.status).toBe("joined"));
    expect((await room.lock("total")).success).toBe(true);
    await waitFor(() => expect(total!.textContent).toBe("Bob is editing"));
    expect(total!.getAttribute("data-state")).toBe("other");
    expect(total!.className).toBe("roster-field-lock roster-field-lock--other");

    await act(async () => {
      expect((await alice.client.openRooms.get(key)!.lock("note")).success).toBe(true);
    });
    await waitFor(() => expect(note!.textContent).toBe("You are editing"));
    expect(note!.getAttribute("data-state")).toBe("mine");

    expect(await room.unlock("total")).toBe(true);
    await waitFor(() => expect(total!.textContent).toBe(""));
    expect(total!.getAttribute("data-state")).toBe("free");
  });
});

describe("LastSeen", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it("renders formatLastSeen in the given or the user's locale, and re-renders every minute", () => {
    vi.useFakeTimers({ now: new Date("2026-11-26T14:10:00.000Z") });
    const fiveMinAgo = new Date("2026-11-26T14:05:00.000Z");
    const { container } = render(
      <>
        <LastSeen date={fiveMinAgo} locale="en" />
        <LastSeen date={fiveMinAgo.toISOString()} locale="de" />
        <LastSeen date={fiveMinAgo} />
      </>,
    );
    const times = [...container.querySelectorAll("time")];
    expect(times.map((t) => t.textContent)).toEqual([
      "5 minutes ago",
      "vor 5 Minuten",
      "5 minutes ago", // jsdom's navigator.language is en-US
    ]);
    expect(times[0]!.getAttribute("datetime")).toBe("2026-11-26T14:05:00.000Z");
    expect(times[0]!.className).toBe("roster-last-seen");
    act(() => {
      vi.advanceTimersByTime(60_000);
    });
    expect(times.map((t) => t.textContent)).toEqual(["6 minutes ago", "vor 6 Minuten", "6 minutes ago"]);
  });

  it("shows when a real user was last seen, in the given locale; the fallback for a user never seen", async () => {
    const alice = user("alice");
    const bob = user("bob");
    const nobody = uid("nobody");
    // Bob was here a moment ago.
    await bob.client.connect();
    await bob.client.disconnect();
    function Seen({ id, locale }: { id: string; locale: string }): ReactNode {
      const s = useUserStatus(id);
      return (
        <span data-status={s?.status ?? "?"}>
          <LastSeen date={s?.lastSeen ?? null} locale={locale} fallback="never" />
        </span>
      );
    }
    const { container } = renderWith(
      alice.client,
      <>
        <Seen id={bob.id} locale="en" />
        <Seen id={bob.id} locale="de" />
        <Seen id={nobody} locale="en" />
      </>,
    );
    const shown = () => [...container.querySelectorAll("[data-status]")].map((e) => `${e.getAttribute("data-status")}: ${e.textContent}`);
    await waitFor(() => expect(shown()).toEqual(["offline: now", "offline: jetzt", "offline: never"]));
    const time = container.querySelector("time")!;
    expect(time.className).toBe("roster-last-seen");
    expect(Math.abs(Date.parse(time.getAttribute("datetime")!) - Date.now())).toBeLessThan(10_000);
  });

  it("renders the fallback (or nothing) for a user never seen", () => {
    const { container } = render(
      <>
        <LastSeen date={null} fallback="never" />
        <LastSeen date={null} />
      </>,
    );
    expect(container.innerHTML).toBe('<span class="roster-last-seen roster-last-seen--never">never</span>');
  });
});
