/**
 * The order-editor example in real headless Chromium (two browser contexts, two
 * users) against the real `roster` server (short timings: leave grace 1 s).
 * Every wait is a condition polled in the page (waitForFunction) with a
 * deadline; the only fixed waits are observation windows that must see nothing.
 * Screenshots land in test-results/.
 */
import { rmSync } from "node:fs";
import { join } from "node:path";
import type { Browser } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { rest, serviceToken, sleep, uid } from "../../../test-support/server.js";
import {
  RESULTS,
  ensureBuilt,
  joined,
  launchChromium,
  openApp,
  record,
  screenshot,
  serveDist,
  shows,
  type Visitor,
} from "./support.js";

/** FAST_TIMINGS of the shared globalSetup. */
const LEAVE_GRACE_MS = 1000;

const RESULTS_DIR = join(RESULTS, "screenshots");
let browser: Browser;
let app: { origin: string; close: () => Promise<void> };
let open: Visitor[] = [];

beforeAll(async () => {
  // This run's screenshots only.
  rmSync(RESULTS_DIR, { recursive: true, force: true });
  ensureBuilt();
  [browser, app] = await Promise.all([launchChromium(), serveDist()]);
});

afterAll(async () => {
  await browser?.close();
  await app?.close();
});

afterEach(async (ctx) => {
  const errors = open.flatMap((v) => v.errors.map((e) => `${v.userId}: ${e}`));
  await Promise.all(open.map((v) => v.context.close().catch(() => {})));
  open = [];
  // Errors of a failed test are already reported with it.
  if (ctx.task.result?.state !== "fail") expect(errors).toEqual([]);
});

/** Alice and Bob (fresh user ids) on a fresh order; Alice first, then Bob. */
async function pair(): Promise<{ alice: Visitor; bob: Visitor; order: string }> {
  const order = uid("order");
  const aliceId = uid("alice");
  const bobId = uid("bob");
  const friends = [aliceId, bobId, uid("carol")];
  const alice = await openApp(browser, app.origin, { userId: aliceId, name: "Alice", order, friends });
  open.push(alice);
  await joined(alice);
  const bob = await openApp(browser, app.origin, { userId: bobId, name: "Bob", order, friends });
  open.push(bob);
  await joined(bob);
  return { alice, bob, order };
}

describe("order editor in Chromium", () => {
  it("each user sees the other appear within 1 s, with live friend status", async () => {
    const { alice, bob } = await pair();
    await Promise.all([shows(alice, [bob.userId], 5000), shows(bob, [alice.userId], 5000)]);

    // Measured in the pages (one machine, one clock): from Bob's room being joined
    // to each page first listing the other.
    const [ra, rb] = await Promise.all([record(alice), record(bob)]);
    const bobJoined = rb.joinedAt!;
    const aliceSawBob = ra.history.find((h) => h.others.includes(bob.userId))!.t;
    const bobSawAlice = rb.history.find((h) => h.others.includes(alice.userId))!.t;
    expect(aliceSawBob - bobJoined).toBeLessThan(1000);
    expect(bobSawAlice - bobJoined).toBeLessThan(1000);

    // The avatars (PresenceIndicator) name the other user.
    await alice.page.getByRole("listitem", { name: /^Bob, / }).waitFor({ timeout: 5000 });
    await bob.page.getByRole("listitem", { name: /^Alice, / }).waitFor({ timeout: 5000 });

    // Friends list: each sees the other online (or away: the test server's away_after is 1 s).
    for (const [v, other] of [
      [alice, bob],
      [bob, alice],
    ] as const) {
      await v.page.waitForFunction(
        (id) => ["online", "away"].includes(document.querySelector(`[data-friend="${id}"]`)?.getAttribute("data-status") ?? ""),
        other.userId,
        { timeout: 5000 },
      );
    }
    await Promise.all([screenshot(alice, "1-alice-sees-bob"), screenshot(bob, "1-bob-sees-alice")]);
  });

  it("a field focused (locked) by one user is read-only for the other", async () => {
    const { alice, bob } = await pair();
    await Promise.all([shows(alice, [bob.userId]), shows(bob, [alice.userId])]);

    const aliceTotal = alice.page.getByTestId("field-totalAmount");
    const bobTotal = bob.page.getByTestId("field-totalAmount");
    await aliceTotal.focus();
    await alice.page.waitForFunction(() => document.querySelector("[data-testid=field-totalAmount]")?.getAttribute("data-lock") === "mine");
    await bob.page.waitForFunction(() => {
      const el = document.querySelector<HTMLInputElement>("[data-testid=field-totalAmount]");
      return el?.readOnly === true && el.getAttribute("data-lock") === "other";
    });
    expect(await bob.page.getByTestId("lock-totalAmount").textContent()).toBe("Alice is editing");
    expect(await bobTotal.getAttribute("aria-readonly")).toBe("true");
    // Other fields stay editable for Bob.
    expect(await bob.page.getByTestId("field-customer").evaluate((el: HTMLInputElement) => el.readOnly)).toBe(false);

    // Bob cannot type into it; Alice can.
    await bobTotal.click();
    await bob.page.keyboard.type("999");
    expect(await bobTotal.inputValue()).toBe("199.00");
    await aliceTotal.press("End");
    await alice.page.keyboard.type("5");
    expect(await aliceTotal.inputValue()).toBe("199.005");
    await Promise.all([screenshot(alice, "2-alice-editing-total"), screenshot(bob, "2-bob-total-read-only")]);

    // Bob's focus while locked sent nothing; Alice's blur frees the field and,
    // as Bob's input still has the focus, Bob takes the lock.
    await alice.page.getByTestId("field-customer").focus();
    await bob.page.waitForFunction(() => {
      const el = document.querySelector<HTMLInputElement>("[data-testid=field-totalAmount]");
      return el?.readOnly === false && el.getAttribute("data-lock") === "mine";
    });
    await alice.page.waitForFunction(() => {
      const el = document.querySelector<HTMLInputElement>("[data-testid=field-totalAmount]");
      return el?.readOnly === true && el.getAttribute("data-lock") === "other";
    });
    expect(await alice.page.getByTestId("lock-totalAmount").textContent()).toBe("Bob is editing");
    // …and Bob holds nothing else: Alice's customer field is hers.
    await bob.page.waitForFunction(() => document.querySelector("[data-testid=field-customer]")?.getAttribute("data-lock") === "other");
  });

  it("closing a page removes that user from the other page after the leave grace", async () => {
    const { alice, bob } = await pair();
    await Promise.all([shows(alice, [bob.userId]), shows(bob, [alice.userId])]);
    await alice.page.evaluate(() => {
      window.__removed = [];
      new MutationObserver((muts) => {
        for (const m of muts)
          for (const n of m.removedNodes)
            if (n instanceof Element && n.hasAttribute("data-user-id")) window.__removed!.push({ t: Date.now(), userId: n.getAttribute("data-user-id")! });
      }).observe(document.querySelector("[data-testid=present-users]")!, { childList: true });
    });

    const closedAt = Date.now();
    await bob.page.close();
    await shows(alice, [], LEAVE_GRACE_MS + 5000);
    const removed = await alice.page.evaluate(() => window.__removed!);
    expect(removed.map((r) => r.userId)).toEqual([bob.userId]);
    const after = removed[0]!.t - closedAt;
    // Not before the grace (the server holds the session for it; a small margin
    // for timer granularity), and not much after.
    expect(after).toBeGreaterThanOrEqual(LEAVE_GRACE_MS - 100);
    expect(after).toBeLessThan(LEAVE_GRACE_MS + 4000);

    // The friends list turns Bob offline, with a "last seen".
    await alice.page.waitForFunction(
      (id) => document.querySelector(`[data-friend="${id}"]`)?.getAttribute("data-status") === "offline",
      bob.userId,
      { timeout: 5000 },
    );
    await alice.page.locator(`[data-friend="${bob.userId}"] time.roster-last-seen`).waitFor({ timeout: 5000 });
    await screenshot(alice, "3-alice-after-bob-closed");
    console.log(`[e2e] Bob removed from Alice's page ${after} ms after closing (leave grace ${LEAVE_GRACE_MS} ms)`);
  });

  it("reloading a page does not flicker: the other page never shows that user leave", async () => {
    const { alice, bob } = await pair();
    await Promise.all([shows(alice, [bob.userId]), shows(bob, [alice.userId])]);
    await alice.page.evaluate(() => {
      window.__removed = [];
      new MutationObserver((muts) => {
        for (const m of muts)
          for (const n of m.removedNodes)
            if (n instanceof Element && n.hasAttribute("data-user-id")) window.__removed!.push({ t: Date.now(), userId: n.getAttribute("data-user-id")! });
      }).observe(document.querySelector("[data-testid=present-users]")!, { subtree: true, childList: true });
    });
    const avatarsBefore = await alice.page.getByRole("listitem", { name: /^Bob, / }).count();
    expect(avatarsBefore).toBe(1);

    const clientIdBefore = await bob.page.evaluate(() => JSON.stringify(sessionStorage));
    const t0 = Date.now();
    await bob.page.reload();
    await joined(bob);
    await shows(bob, [alice.userId]);
    const reloadMs = Date.now() - t0;
    // Same tab, same clientId: the session was resumed, not replaced.
    expect(await bob.page.evaluate(() => JSON.stringify(sessionStorage))).toBe(clientIdBefore);

    // Watch Alice's page for a further grace and a half: a leave after the grace
    // (had the resume failed) would show up here.
    await sleep(LEAVE_GRACE_MS * 1.5);
    const ra = await record(alice);
    const removed = await alice.page.evaluate(() => window.__removed!);
    // (The resume must beat the leave grace: a machine too slow to reload in time would fail here.)
    const why = `Bob's reload took ${reloadMs} ms (leave grace ${LEAVE_GRACE_MS} ms)`;
    expect(removed, why).toEqual([]);
    const firstWithBob = ra.history.findIndex((h) => h.others.includes(bob.userId));
    expect(firstWithBob).toBeGreaterThanOrEqual(0);
    expect(ra.history.slice(firstWithBob).filter((h) => !h.others.includes(bob.userId)), why).toEqual([]);
    expect(ra.others).toEqual([bob.userId]);
    expect(await alice.page.getByRole("listitem", { name: /^Bob, / }).count()).toBe(1);
    await Promise.all([screenshot(alice, "4-alice-after-bob-reloaded"), screenshot(bob, "4-bob-reloaded")]);
    console.log(`[e2e] Bob's reload took ${reloadMs} ms to rejoin; Alice saw no leave`);
  });

  it("a MUTATING posted over REST shows the stale banner in both pages", async () => {
    const { alice, bob, order } = await pair();
    await Promise.all([shows(alice, [bob.userId]), shows(bob, [alice.userId])]);
    expect(await alice.page.getByTestId("stale-banner").count()).toBe(0);

    const lifecycle = (type: "MUTATING" | "MUTATED") =>
      rest("POST", "/lifecycle", serviceToken(), { type, entity: "Order", id: order, userId: "erp-sync" });
    expect((await lifecycle("MUTATING")).status).toBe(202);
    for (const v of [alice, bob]) {
      const banner = v.page.getByTestId("stale-banner");
      await banner.waitFor({ timeout: 5000 });
      expect(await banner.textContent()).toContain("This order is being changed by erp-sync");
      expect(await banner.getAttribute("role")).toBe("alert");
    }
    await Promise.all([screenshot(alice, "5-alice-stale-banner"), screenshot(bob, "5-bob-stale-banner")]);

    expect((await lifecycle("MUTATED")).status).toBe(202);
    for (const v of [alice, bob]) {
      await v.page.getByTestId("stale-banner").waitFor({ state: "detached", timeout: 5000 });
      expect(await v.page.getByTestId("version").textContent()).toBe("Version 1");
    }
  });
});
