// Live activity feed: the newest 200 rows of the activity log, newest on top;
// GET /activity?limit=50 at start (and after a reconnect), then each `activity`
// stream event. Rows are de-duplicated by id.

import { qs } from "./api.js";
import { byId, clear, h, perFrame, setText, timeEl } from "./dom.js";

export const FEED_MAX = 200;

export function createFeed(getApi) {
  /** id → item */
  const items = new Map();
  const liById = new Map();
  const fresh = new Set();
  const list = byId("feed");
  const count = byId("feed-count");
  const schedule = perFrame(render);

  async function load() {
    try {
      const page = await getApi().get(`/activity${qs({ limit: 50 })}`);
      for (const it of page.items || []) if (!items.has(it.id)) items.set(it.id, it);
    } catch (e) {
      setText(count, `activity unavailable: ${e.message}`);
    }
    schedule();
  }

  function describe(it) {
    const user = it.userId ?? it.user ?? null;
    const room = it.room ?? null;
    const parts = [];
    if (user) parts.push(h("strong", {}, user));
    if (room) parts.push(user ? " in " : "", h("span", { class: "mono" }, room));
    if (it.actor && it.actor !== user) parts.push(parts.length ? " · by " : "by ", it.actor);
    const d = it.details;
    if (d && typeof d === "object" && Object.keys(d).length) {
      const keys = Object.keys(d).sort().join(",");
      let s;
      // The common shapes in words; anything else as compact JSON.
      if (keys === "from,to") s = `${d.from} → ${d.to}`;
      else if (keys === "reason") s = String(d.reason);
      else if (keys === "device") s = `on ${d.device}`;
      else s = JSON.stringify(d);
      if (s.length > 90) s = `${s.slice(0, 89)}…`;
      parts.push(" ", h("span", { class: "muted small" }, s));
    }
    return parts;
  }

  function row(it) {
    const user = it.userId ?? it.user ?? "";
    const li = h(
      "li",
      { "data-testid": "feed-item", "data-id": it.id, "data-type": it.type, "data-user": user, "data-room": it.room ?? "" },
      timeEl(it.at),
      h("span", { class: "feed-type", "data-type": it.type, title: it.type }, it.type),
      h("span", { class: "feed-what" }, describe(it)),
    );
    if (fresh.has(it.id)) li.classList.add("fresh");
    return li;
  }

  function render() {
    const sorted = [...items.values()].sort((a, b) => b.id - a.id);
    for (const it of sorted.slice(FEED_MAX)) items.delete(it.id);
    const shown = sorted.slice(0, FEED_MAX);
    const want = new Set(shown.map((i) => i.id));
    for (const [id, li] of liById) {
      if (!want.has(id)) {
        li.remove();
        liById.delete(id);
      }
    }
    let cursor = list.firstElementChild;
    for (const it of shown) {
      let li = liById.get(it.id);
      if (!li) {
        li = row(it);
        liById.set(it.id, li);
      }
      if (li !== cursor) list.insertBefore(li, cursor);
      else cursor = cursor.nextElementSibling;
    }
    fresh.clear();
    if (!shown.length && !list.querySelector(".muted")) list.appendChild(h("li", { class: "muted" }, "No activity yet."));
    if (shown.length) for (const m of list.querySelectorAll("li.muted")) m.remove();
    setText(count, shown.length >= FEED_MAX ? `latest ${FEED_MAX}` : `${shown.length} events`);
  }

  return {
    load,
    /** An `activity` stream event. */
    apply(it) {
      if (!it || it.id === undefined || items.has(it.id)) return;
      items.set(it.id, it);
      fresh.add(it.id);
      schedule();
    },
    reset() {
      items.clear();
      for (const li of liById.values()) li.remove();
      liById.clear();
      clear(list);
      schedule();
    },
  };
}
