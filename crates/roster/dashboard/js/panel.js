// The room panel (a side drawer): the room's members from GET /sessions?room=
// (device, OS, app version, latency, status) with their presence state from
// GET /rooms/{room}/presence, its locks from GET /rooms/{room}/locks, and uPlot
// charts of GET /rooms/{room}/stats?bucket=1m|1h|1d. Refreshed when a `rooms`
// event changes the room, and every few seconds while open (latency is measured
// from the server's pings and changes without any room event).

import { qs, seg } from "./api.js";
import { byId, clear, fmtNum, h, setText, timeEl } from "./dom.js";

const MEMBERS_EVERY_MS = 2000;
const STATS_EVERY_MS = 15_000;
const MEMBER_LIMIT = 500;

export function createPanel(getApi, { onClose, roomInfo }) {
  const panel = byId("room-panel");
  const title = byId("panel-title");
  const keyEl = byId("panel-key");
  const facts = byId("panel-facts");
  const errorEl = byId("panel-error");
  const membersBody = byId("members-body");
  const membersCount = byId("members-count");
  const membersNote = byId("members-note");
  const locksList = byId("locks-list");
  const locksCount = byId("locks-count");
  const chartsNote = byId("charts-note");
  const bucketSwitch = byId("bucket-switch");
  const boxes = { online: byId("chart-online"), flow: byId("chart-flow"), latency: byId("chart-latency") };

  let key = null;
  let bucket = "1m";
  let timer = null;
  let inflight = false;
  let again = false;
  let statsAt = 0;
  let statsItems = [];
  let charts = [];
  let generation = 0;
  let lastPresence = null;
  let resizeObs = null;

  byId("panel-close").addEventListener("click", () => close());
  panel.addEventListener("keydown", (e) => {
    if (e.key === "Escape") {
      e.preventDefault();
      close();
    }
  });
  bucketSwitch.addEventListener("click", (e) => {
    const b = e.target.closest("button[data-bucket]");
    if (!b || b.dataset.bucket === bucket) return;
    bucket = b.dataset.bucket;
    for (const btn of bucketSwitch.querySelectorAll("button")) btn.setAttribute("aria-pressed", btn === b ? "true" : "false");
    loadStats();
  });

  function open(k) {
    const same = k === key && !panel.hidden;
    key = k;
    generation++;
    if (!same) {
      setText(keyEl, k);
      clear(membersBody);
      clear(locksList);
      setText(membersCount, "");
      setText(locksCount, "");
      setText(errorEl, "");
      membersNote.hidden = true;
      lastPresence = null;
      destroyCharts();
      statsItems = [];
    }
    panel.hidden = false;
    document.body.classList.add("panel-open");
    renderFacts();
    title.focus();
    refresh();
    loadStats();
    clearInterval(timer);
    timer = setInterval(() => {
      refresh();
      if (Date.now() - statsAt > STATS_EVERY_MS) loadStats();
    }, MEMBERS_EVERY_MS);
    if (!resizeObs && "ResizeObserver" in window) {
      resizeObs = new ResizeObserver(() => {
        for (const c of charts) c.setSize({ width: chartWidth(c.root.parentElement), height: c.height });
      });
      resizeObs.observe(panel);
    }
  }

  function close() {
    if (panel.hidden) return;
    const k = key;
    key = null;
    generation++;
    clearInterval(timer);
    timer = null;
    destroyCharts();
    panel.hidden = true;
    document.body.classList.remove("panel-open");
    onClose(k);
  }

  /** Members, presence and locks; one request set at a time, a pending one coalesced. */
  async function refresh() {
    if (!key) return;
    if (inflight) {
      again = true;
      return;
    }
    inflight = true;
    const gen = generation;
    const k = key;
    const api = getApi();
    try {
      const [sessions, presence, locks] = await Promise.allSettled([
        api.get(`/sessions${qs({ room: k, limit: MEMBER_LIMIT })}`),
        api.get(`/rooms/${seg(k)}/presence`),
        api.get(`/rooms/${seg(k)}/locks`),
      ]);
      if (gen !== generation) return;
      if (presence.status === "fulfilled") lastPresence = presence.value;
      else if (presence.reason && presence.reason.status === 404) lastPresence = null;
      renderFacts();
      const problems = [sessions, presence, locks]
        .filter((r) => r.status === "rejected" && !(r.reason && r.reason.status === 404))
        .map((r) => r.reason.message);
      setText(errorEl, problems.length ? `Could not load everything: ${problems[0]}` : "");
      if (sessions.status === "fulfilled") renderMembers(sessions.value);
      if (locks.status === "fulfilled") renderLocks(locks.value.items || []);
      else if (locks.reason && locks.reason.status === 404) renderLocks([]);
    } finally {
      inflight = false;
      if (again) {
        again = false;
        refresh();
      }
    }
  }

  function renderFacts() {
    const r = roomInfo(key) || {};
    const p = lastPresence || {};
    const items = [
      ["Type", r.type || "–"],
      ["Capacity", r.capacity > 0 ? fmtNum(r.capacity) : r.capacity === 0 ? "unlimited" : "–"],
      ["Sessions", fmtNum(r.sessions ?? p.count)],
      ["Users", fmtNum(r.users)],
      ["Status", r.status || "–"],
      ["Stale", (r.stale ?? p.stale) ? (p.busyBy ? `yes (by ${p.busyBy})` : "yes") : "no"],
    ];
    if (typeof p.version === "number") items.push(["Version", fmtNum(p.version)]);
    if (typeof p.heartbeatIntervalMs === "number") items.push(["Heartbeat", `${fmtNum(p.heartbeatIntervalMs)} ms`]);
    if (!roomInfo(key)) items.push(["Live", "no (not in the stream)"]);
    clear(facts);
    for (const [dt, dd] of items) facts.appendChild(h("div", {}, h("dt", {}, dt), h("dd", { "data-fact": dt.toLowerCase() }, dd)));
  }

  function renderMembers(page) {
    const items = (page.items || []).slice();
    // The presence snapshot carries each session's state and the user's display name.
    const stateBySession = new Map();
    const nameByUser = new Map();
    if (lastPresence && Array.isArray(lastPresence.users)) {
      for (const u of lastPresence.users) {
        if (u.name) nameByUser.set(u.userId, u.name);
        for (const s of u.sessions || []) stateBySession.set(s.sessionId, s.state);
      }
    }
    items.sort((a, b) => (a.userId < b.userId ? -1 : a.userId > b.userId ? 1 : a.sessionId < b.sessionId ? -1 : 1));
    const focused = document.activeElement;
    clear(membersBody);
    for (const s of items) {
      const state = stateBySession.get(s.sessionId);
      const stateText = state && typeof state === "object" && Object.keys(state).length ? JSON.stringify(state) : "";
      const name = nameByUser.get(s.userId);
      membersBody.appendChild(
        h(
          "tr",
          { "data-testid": "member-row", "data-user": s.userId, "data-session": s.sessionId },
          h("td", { class: "user", title: name && name !== s.userId ? name : null }, s.userId),
          h("td", { "data-testid": "member-device" }, s.device || "–"),
          h("td", { "data-testid": "member-os" }, s.os || "–"),
          h("td", { "data-testid": "member-app" }, s.appVersion || "–"),
          h(
            "td",
            { class: "num", "data-testid": "member-latency", "data-ms": s.latencyMs ?? "" },
            typeof s.latencyMs === "number" ? `${fmtNum(s.latencyMs)} ms` : "–",
          ),
          h("td", {}, h("span", { class: `badge ${s.status || "offline"}`, "data-testid": "member-status" }, s.connected === false ? `${s.status} (detached)` : s.status || "–")),
          h("td", { class: "state", title: stateText || null }, stateText || h("span", { class: "muted" }, "–")),
        ),
      );
    }
    if (focused && !document.contains(focused)) title.focus({ preventScroll: true });
    const users = new Set(items.map((s) => s.userId)).size;
    setText(membersCount, `(${fmtNum(users)} users, ${fmtNum(items.length)} sessions)`);
    membersNote.hidden = !page.nextCursor && items.length > 0;
    setText(membersNote, page.nextCursor ? `Showing the first ${fmtNum(items.length)} sessions.` : "Nobody is in this room.");
  }

  function renderLocks(items) {
    clear(locksList);
    for (const l of items) {
      locksList.appendChild(
        h(
          "li",
          { "data-testid": "lock-item", "data-field": l.field },
          h("span", { class: "mono" }, l.field),
          " held by ",
          h("strong", {}, l.userId),
          " until ",
          timeEl(l.expiresAt),
        ),
      );
    }
    if (!items.length) locksList.appendChild(h("li", { class: "muted" }, "No field is locked."));
    setText(locksCount, items.length ? `(${items.length})` : "");
  }

  async function loadStats() {
    if (!key) return;
    const gen = generation;
    const k = key;
    const b = bucket;
    statsAt = Date.now();
    try {
      const res = await getApi().get(`/rooms/${seg(k)}/stats${qs({ bucket: b })}`);
      if (gen !== generation || b !== bucket) return;
      statsItems = (res.items || []).slice().sort((x, y) => Date.parse(x.start) - Date.parse(y.start));
      setText(chartsNote, statsItems.length ? "" : "No statistics for this room yet (buckets are written as traffic happens).");
      drawCharts();
    } catch (e) {
      if (gen !== generation) return;
      setText(chartsNote, e.status === 404 ? "No statistics for this room." : `Statistics unavailable: ${e.message}`);
      statsItems = [];
      drawCharts();
    }
  }

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function chartWidth(box) {
    return Math.max(240, Math.floor(box.clientWidth || panel.clientWidth - 40));
  }

  function destroyCharts() {
    for (const c of charts) c.destroy();
    charts = [];
    for (const b of Object.values(boxes)) {
      clear(b);
      b.removeAttribute("role");
      b.removeAttribute("aria-label");
    }
  }

  function drawCharts() {
    destroyCharts();
    const uPlot = window.uPlot;
    if (!uPlot) {
      setText(chartsNote, "Charting library not loaded.");
      return;
    }
    for (const b of Object.values(boxes)) b.closest("figure").hidden = !statsItems.length;
    if (!statsItems.length) return;
    const bucketSec = b2s(bucket);
    const xs = statsItems.map((i) => Math.floor(Date.parse(i.start) / 1000));
    const col = (f) => statsItems.map((i) => (typeof i[f] === "number" ? i[f] : null));
    const text = cssVar("--text");
    const grid = cssVar("--grid");
    const colors = [cssVar("--chart-1"), cssVar("--chart-2"), cssVar("--chart-3"), cssVar("--chart-4")];
    const last = statsItems[statsItems.length - 1];

    const make = (box, series, data, summary) => {
      const opts = {
        width: chartWidth(box),
        height: 140,
        scales: {
          x: { time: true, range: (u, min, max) => (min === max ? [min - bucketSec, max + bucketSec] : [min, max]) },
          y: { range: (u, min, max) => [0, Math.max(1, max == null ? 1 : max * 1.1)] },
        },
        axes: [
          { stroke: text, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } },
          { stroke: text, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 }, size: 46 },
        ],
        series: [{}, ...series.map((s, i) => ({ label: s, stroke: colors[i], width: 2, points: { show: statsItems.length < 40 }, spanGaps: false }))],
        legend: { show: true, live: true },
        cursor: { drag: { x: false, y: false } },
      };
      box.setAttribute("role", "img");
      box.setAttribute("aria-label", summary);
      charts.push(new uPlot(opts, [xs, ...data], box));
    };
    make(
      boxes.online,
      ["peak", "average"],
      [col("onlineSessionsPeak"), col("onlineSessionsAvg")],
      `Online sessions, latest ${bucket} bucket: peak ${last.onlineSessionsPeak}, average ${round(last.onlineSessionsAvg)}`,
    );
    make(
      boxes.flow,
      ["joins", "leaves", "timeouts"],
      [col("joins"), col("leaves"), col("timeouts")],
      `Latest ${bucket} bucket: ${last.joins} joins, ${last.leaves} leaves, ${last.timeouts} timeouts`,
    );
    make(
      boxes.latency,
      ["p95 ms", "avg ms"],
      [col("latencyP95Ms"), col("latencyAvgMs")],
      `Latency, latest ${bucket} bucket: p95 ${last.latencyP95Ms == null ? "none" : `${round(last.latencyP95Ms)} ms`}`,
    );
  }

  return {
    open,
    close,
    get key() {
      return key;
    },
    /** Called for every `rooms` event: refresh when it touched the open room. */
    roomsChanged(keys) {
      if (!key || !keys.includes(key)) return;
      renderFacts();
      refresh();
      if (Date.now() - statsAt > 5000) loadStats();
    },
    themeChanged() {
      if (key && statsItems.length) drawCharts();
    },
  };
}

function b2s(b) {
  return b === "1d" ? 86400 : b === "1h" ? 3600 : 60;
}

function round(n) {
  return typeof n === "number" ? Math.round(n * 10) / 10 : n;
}
