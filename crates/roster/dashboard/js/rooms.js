// Rooms table: live from the stream's `rooms` events (a full snapshot, then
// changed rooms and removals), sorted and filtered in memory, shown 50 rows per
// page so that 1,000 rooms (or many more) cost no more than 50 rows of DOM.
// Rows are kept by key and updated in place, so a live update does not steal
// the keyboard focus or reset the scroll position.

import { byId, clear, fmtNum, h, perFrame, setText } from "./dom.js";

export const PAGE_SIZE = 50;

const SORTS = {
  key: (a, b) => cmpStr(a.key, b.key),
  type: (a, b) => cmpStr(a.type, b.type) || cmpStr(a.key, b.key),
  occupancy: (a, b) => occupancy(a) - occupancy(b) || a.sessions - b.sessions || cmpStr(a.key, b.key),
  sessions: (a, b) => a.sessions - b.sessions || cmpStr(a.key, b.key),
};
const DEFAULT_DIR = { key: "ascending", type: "ascending", occupancy: "descending", sessions: "descending" };

function cmpStr(a, b) {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** sessions / capacity in [0, ∞); 0 when the capacity is unlimited (0) or unknown. */
export function occupancy(r) {
  return r.capacity > 0 ? r.sessions / r.capacity : 0;
}

function markSelected(tr, on) {
  if (on) tr.setAttribute("aria-current", "true");
  else tr.removeAttribute("aria-current");
}

export function createRooms({ onOpen, onChanged }) {
  /** key → RoomLive */
  const rooms = new Map();
  const rowByKey = new Map();
  let sortKey = "occupancy";
  let sortDir = "descending";
  let filter = "";
  let typeFilter = "";
  let staleOnly = false;
  let page = 0;
  let selected = null;
  let firstDataRendered = false;
  let knownTypes = "";

  const tbody = byId("rooms-body");
  const table = tbody.closest("table");
  const filterInput = byId("rooms-filter");
  const typeSelect = byId("rooms-type");
  const staleBox = byId("rooms-stale-only");
  const prev = byId("rooms-prev");
  const next = byId("rooms-next");
  const pageLabel = byId("rooms-page");
  const countLabel = byId("rooms-count");
  const empty = byId("rooms-empty");
  const staleList = byId("stale-list");
  const staleEmpty = byId("stale-empty");
  const staleCount = byId("stale-count");

  const schedule = perFrame(render);

  filterInput.addEventListener("input", () => {
    filter = filterInput.value.trim().toLowerCase();
    page = 0;
    schedule();
  });
  typeSelect.addEventListener("change", () => {
    typeFilter = typeSelect.value;
    page = 0;
    schedule();
  });
  staleBox.addEventListener("change", () => {
    staleOnly = staleBox.checked;
    page = 0;
    schedule();
  });
  prev.addEventListener("click", () => {
    if (page > 0) {
      page--;
      render();
    }
  });
  next.addEventListener("click", () => {
    page++;
    render();
  });
  for (const btn of table.querySelectorAll("th button.sort")) {
    btn.addEventListener("click", () => {
      const k = btn.dataset.sort;
      if (sortKey === k) sortDir = sortDir === "ascending" ? "descending" : "ascending";
      else {
        sortKey = k;
        sortDir = DEFAULT_DIR[k];
      }
      for (const th of table.querySelectorAll("th[data-sort]"))
        th.setAttribute("aria-sort", th.dataset.sort === sortKey ? sortDir : "none");
      render();
    });
  }

  // Rows: click, Enter or Space opens the room; arrows move between rows.
  tbody.addEventListener("click", (e) => {
    const tr = e.target.closest("tr[data-key]");
    if (tr) onOpen(tr.dataset.key);
  });
  tbody.addEventListener("keydown", (e) => {
    const tr = e.target.closest("tr[data-key]");
    if (!tr) return;
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      onOpen(tr.dataset.key);
    } else if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      const to = e.key === "ArrowDown" ? tr.nextElementSibling : tr.previousElementSibling;
      if (to) to.focus();
    } else if (e.key === "Home" || e.key === "End") {
      e.preventDefault();
      const to = e.key === "Home" ? tbody.firstElementChild : tbody.lastElementChild;
      if (to) to.focus();
    }
  });

  function visible() {
    const list = [];
    for (const r of rooms.values()) {
      if (typeFilter && r.type !== typeFilter) continue;
      if (staleOnly && !r.stale) continue;
      if (filter && !r.key.toLowerCase().includes(filter) && !String(r.type).toLowerCase().includes(filter)) continue;
      list.push(r);
    }
    const cmp = SORTS[sortKey];
    list.sort(sortDir === "ascending" ? cmp : (a, b) => cmp(b, a));
    return list;
  }

  function makeRow(key) {
    const bar = h("span");
    const tr = h(
      "tr",
      { tabindex: "0", "data-testid": "room-row" },
      h("td", { class: "key" }),
      h("td", { class: "type" }),
      h(
        "td",
        { class: "col-occ" },
        h("div", { class: "occ" }, h("div", { class: "bar", "aria-hidden": "true" }, bar), h("span", { class: "occ-text" })),
      ),
      h("td", { class: "num sessions" }),
      h("td", { class: "num users" }),
      h("td", { class: "flags" }),
    );
    tr.dataset.key = key;
    return tr;
  }

  function fillRow(tr, r) {
    const [kTd, tTd, oTd, sTd, uTd, fTd] = tr.children;
    setText(kTd, r.key);
    if (kTd.title !== r.key) kTd.title = r.key;
    setText(tTd, r.type || "–");
    const occ = occupancy(r);
    const pct = Math.round(occ * 100);
    const bar = oTd.querySelector(".bar");
    const level = occ >= 0.9 ? "bad" : occ >= 0.7 ? "warn" : "ok";
    if (bar.dataset.level !== level) bar.dataset.level = level;
    const width = `${Math.min(100, occ * 100).toFixed(1)}%`;
    if (bar.firstChild.style.width !== width) bar.firstChild.style.width = width;
    setText(
      oTd.querySelector(".occ-text"),
      r.capacity > 0 ? `${pct} % (${fmtNum(r.sessions)}/${fmtNum(r.capacity)})` : `${fmtNum(r.sessions)} / unlimited`,
    );
    tr.dataset.occupancy = String(pct);
    setText(sTd, fmtNum(r.sessions));
    setText(uTd, fmtNum(r.users));
    const flags = `${r.stale ? "stale" : ""}|${r.status || ""}`;
    if (fTd.dataset.flags !== flags) {
      fTd.dataset.flags = flags;
      clear(fTd);
      if (r.stale) fTd.appendChild(h("span", { class: "badge stale", "data-testid": "stale-flag" }, "stale"));
      if (r.status && r.status !== "active") fTd.appendChild(h("span", { class: `badge status-${r.status}` }, r.status));
      if (!fTd.firstChild) fTd.appendChild(h("span", { class: "muted" }, r.status || "active"));
    }
    tr.dataset.stale = r.stale ? "true" : "false";
    markSelected(tr, r.key === selected);
  }

  function render() {
    const list = visible();
    const pages = Math.max(1, Math.ceil(list.length / PAGE_SIZE));
    if (page >= pages) page = pages - 1;
    const slice = list.slice(page * PAGE_SIZE, (page + 1) * PAGE_SIZE);

    const focusedKey = document.activeElement && document.activeElement.closest && document.activeElement.closest("#rooms-body tr[data-key]")?.dataset.key;
    const want = new Set(slice.map((r) => r.key));
    for (const [key, tr] of rowByKey) {
      if (!want.has(key)) {
        tr.remove();
        rowByKey.delete(key);
      }
    }
    let cursor = tbody.firstElementChild;
    for (const r of slice) {
      let tr = rowByKey.get(r.key);
      if (!tr) {
        tr = makeRow(r.key);
        rowByKey.set(r.key, tr);
      }
      fillRow(tr, r);
      if (tr !== cursor) tbody.insertBefore(tr, cursor);
      else cursor = cursor.nextElementSibling;
    }
    if (focusedKey && rowByKey.has(focusedKey) && document.activeElement !== rowByKey.get(focusedKey)) rowByKey.get(focusedKey).focus({ preventScroll: true });

    empty.hidden = slice.length > 0;
    setText(empty, rooms.size === 0 ? "No live or declared rooms yet." : "No rooms match the filter.");
    setText(countLabel, list.length === rooms.size ? `${fmtNum(rooms.size)} rooms` : `${fmtNum(list.length)} of ${fmtNum(rooms.size)} rooms`);
    setText(pageLabel, `Page ${page + 1} of ${pages}`);
    prev.disabled = page === 0;
    next.disabled = page >= pages - 1;

    renderTypes();
    renderStale();

    if (!firstDataRendered && slice.length > 0) {
      firstDataRendered = true;
      // Read by the end-to-end tests' budget measurement (time to first render).
      try {
        performance.mark("roster:rooms-first-render");
      } catch {
        /* marks unsupported */
      }
    }
  }

  function renderTypes() {
    const types = [...new Set([...rooms.values()].map((r) => r.type).filter(Boolean))].sort();
    const sig = types.join("\n");
    if (sig === knownTypes) return;
    knownTypes = sig;
    const current = typeSelect.value;
    clear(typeSelect);
    typeSelect.appendChild(h("option", { value: "" }, "All types"));
    for (const t of types) typeSelect.appendChild(h("option", { value: t }, t));
    if (current && !types.includes(current)) typeSelect.appendChild(h("option", { value: current }, current));
    typeSelect.value = current;
  }

  function renderStale() {
    const stale = [...rooms.values()].filter((r) => r.stale).sort((a, b) => cmpStr(a.key, b.key));
    const sig = stale.map((r) => r.key).join("\n");
    if (staleList.dataset.sig === sig) return;
    staleList.dataset.sig = sig;
    clear(staleList);
    for (const r of stale.slice(0, 200)) {
      staleList.appendChild(
        h(
          "li",
          { "data-testid": "stale-item" },
          h("button", { type: "button", class: "btn btn-small", "data-key": r.key, onclick: () => onOpen(r.key) }, r.key),
        ),
      );
    }
    if (stale.length > 200) staleList.appendChild(h("li", { class: "muted small" }, `and ${stale.length - 200} more`));
    staleEmpty.hidden = stale.length > 0;
    setText(staleCount, stale.length ? `${stale.length} stale` : "");
  }

  return {
    /** A `rooms` stream event. */
    apply(ev) {
      const changed = [];
      if (ev.full) rooms.clear();
      for (const r of ev.rooms || []) {
        rooms.set(r.key, r);
        changed.push(r.key);
      }
      for (const key of ev.removed || []) {
        rooms.delete(key);
        changed.push(key);
      }
      schedule();
      onChanged(changed, !!ev.full);
    },
    get(key) {
      return rooms.get(key);
    },
    setSelected(key) {
      selected = key;
      for (const [k, tr] of rowByKey) markSelected(tr, k === key);
    },
    row(key) {
      return rowByKey.get(key);
    },
    reset() {
      rooms.clear();
      firstDataRendered = false;
      schedule();
    },
  };
}
