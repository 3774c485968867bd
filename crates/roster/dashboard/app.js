// Roster operator dashboard: entry point. Plain ES modules, no build step, no
// framework; served by the roster binary at /dashboard with its assets embedded.
// Data comes from the same REST API and live stream (GET /api/v1/stream) any
// script may use.

import { ApiError, createApi } from "./js/api.js";
import { byId, fmtNum, setText } from "./js/dom.js";
import { startStream } from "./js/stream.js";
import { createRooms } from "./js/rooms.js";
import { createPanel } from "./js/panel.js";
import { createAlerts } from "./js/alerts.js";
import { createFeed } from "./js/feed.js";
import { initTheme } from "./js/theme.js";

const TOKEN_KEY = "roster.dashboard.token";
const TENANT_KEY = "roster.dashboard.tenant";

let api = null;
let stream = null;
const getApi = () => api;

const els = {
  login: byId("login"),
  form: byId("login-form"),
  token: byId("login-token"),
  tenant: byId("login-tenant"),
  error: byId("login-error"),
  submit: byId("login-submit"),
  dashboard: byId("dashboard"),
  logout: byId("logout"),
  who: byId("who"),
  status: byId("stream-status"),
  statusText: document.querySelector("#stream-status .stream-text"),
  users: document.querySelector("[data-testid=total-users]"),
  sessions: document.querySelector("[data-testid=total-sessions]"),
  rooms: document.querySelector("[data-testid=total-rooms]"),
  firing: document.querySelector("[data-testid=total-firing]"),
};

const theme = initTheme(byId("theme-toggle"), () => panel.themeChanged());

const rooms = createRooms({
  onOpen: (key) => openRoom(key),
  onChanged: (keys, full) => {
    if (full && panel.key) panel.roomsChanged([panel.key]);
    else panel.roomsChanged(keys);
  },
});

const panel = createPanel(getApi, {
  roomInfo: (key) => rooms.get(key),
  onClose: (key) => {
    rooms.setSelected(null);
    const row = key && rooms.row(key);
    if (row) row.focus();
  },
});

const alerts = createAlerts(getApi, {
  onOpenRoom: (key) => openRoom(key),
  onCount: (n) => setText(els.firing, fmtNum(n)),
});

const feed = createFeed(getApi);

function openRoom(key) {
  rooms.setSelected(key);
  panel.open(key);
}

// ---- Session (token) ------------------------------------------------------

function showLoginError(err) {
  let text;
  let code;
  if (err instanceof ApiError && err.status === 401) {
    code = "unauthorized";
    text = `The server refused this token (401 ${err.code || "unauthorized"}): it is invalid, expired or signed with another key.`;
  } else if (err instanceof ApiError && err.status === 403) {
    code = "forbidden";
    text = `This token lacks the role needed (403 ${err.code || "forbidden"}): the dashboard needs a user with the monitor or admin role.`;
  } else if (err instanceof ApiError && err.status === 0) {
    code = "network";
    text = "The server cannot be reached. Check that it is running and try again.";
  } else {
    code = "error";
    text = `Sign-in failed: ${err && err.message ? err.message : String(err)}`;
  }
  els.error.dataset.code = code;
  setText(els.error, text);
  els.error.hidden = false;
}

/** Who the token names (display only: the server checks the token). */
function describeToken(token, tenant) {
  const parts = token.split(".");
  if (parts.length === 3) {
    try {
      const json = JSON.parse(atob(parts[1].replace(/-/g, "+").replace(/_/g, "/")));
      const roles = Array.isArray(json.roles) ? json.roles.join(", ") : json.roles || "";
      return `${json.sub ?? "?"}${roles ? ` (${roles})` : ""}`;
    } catch {
      /* not a JWT */
    }
  }
  return "operator (admin key)";
}

async function signIn(token, tenant, { fromStorage = false } = {}) {
  els.submit.disabled = true;
  els.error.hidden = true;
  const candidate = createApi({ token, tenant });
  try {
    // A read that needs monitor or admin: tells a refused token (401) from a missing role (403).
    await candidate.get("/activity?limit=1");
  } catch (e) {
    els.submit.disabled = false;
    if (fromStorage && e instanceof ApiError && (e.status === 401 || e.status === 403)) {
      sessionStorage.removeItem(TOKEN_KEY);
      sessionStorage.removeItem(TENANT_KEY);
    }
    showLoginError(e);
    els.login.hidden = false;
    els.token.focus();
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  if (tenant) sessionStorage.setItem(TENANT_KEY, tenant);
  else sessionStorage.removeItem(TENANT_KEY);
  api = candidate;
  els.submit.disabled = false;
  els.token.value = "";
  els.login.hidden = true;
  els.dashboard.hidden = false;
  els.logout.hidden = false;
  els.who.hidden = false;
  setText(els.who, describeToken(token, tenant));
  document.body.dataset.signedIn = "true";
  start();
}

function start() {
  rooms.reset();
  alerts.reset();
  feed.reset();
  feed.load();
  alerts.load();
  stream = startStream(api, {
    onStatus: setStatus,
    onOpen: (reconnect) => {
      // Rows written while the stream was down are not replayed by it.
      if (reconnect) {
        feed.load();
        alerts.load();
      }
    },
    onAuthError: (status, message) => {
      signOut();
      showLoginError(new ApiError(status, status === 401 ? "unauthorized" : "forbidden", message));
    },
    onEvent,
  });
}

function onEvent(name, data) {
  switch (name) {
    case "hello":
      if (data && data.tenant) {
        const who = els.who.textContent.replace(/ · tenant .*$/, "");
        setText(els.who, `${who} · tenant ${data.tenant}`);
      }
      break;
    case "totals":
      setText(els.users, fmtNum(data.users));
      setText(els.sessions, fmtNum(data.sessions));
      setText(els.rooms, fmtNum(data.rooms));
      break;
    case "rooms":
      rooms.apply(data);
      break;
    case "activity":
      feed.apply(data);
      break;
    case "alert":
      alerts.apply(data);
      break;
    default:
      break;
  }
}

function setStatus(state, info) {
  els.status.dataset.state = state;
  const text =
    state === "connected"
      ? "Live"
      : state === "connecting"
        ? "Connecting…"
        : state === "reconnecting"
          ? `Reconnecting${info && info.delay ? ` in ${Math.ceil(info.delay / 1000)} s` : "…"}`
          : "Not connected";
  setText(els.statusText, text);
}

function signOut() {
  if (stream) stream.stop();
  stream = null;
  api = null;
  panel.close();
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(TENANT_KEY);
  els.dashboard.hidden = true;
  els.logout.hidden = true;
  els.who.hidden = true;
  els.login.hidden = false;
  delete document.body.dataset.signedIn;
  setStatus("offline");
  for (const el of [els.users, els.sessions, els.rooms, els.firing]) setText(el, "–");
}

els.form.addEventListener("submit", (e) => {
  e.preventDefault();
  const token = els.token.value.trim();
  const tenant = els.tenant.value.trim();
  if (!token) {
    els.error.dataset.code = "empty";
    setText(els.error, "Enter a token.");
    els.error.hidden = false;
    els.token.focus();
    return;
  }
  signIn(token, tenant);
});

// Enter in the token box signs in (Shift+Enter would add a line; tokens have none).
els.token.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) {
    e.preventDefault();
    els.form.requestSubmit();
  }
});

els.logout.addEventListener("click", () => {
  signOut();
  els.error.hidden = true;
  els.token.focus();
});

document.addEventListener("keydown", (e) => {
  if (e.key === "Escape" && panel.key) panel.close();
});

// The room panel (a drawer) starts below the sticky top bar, whatever its height.
const topbar = document.querySelector(".topbar");
const syncTopbar = () => document.documentElement.style.setProperty("--topbar-h", `${topbar.offsetHeight}px`);
new ResizeObserver(syncTopbar).observe(topbar);
syncTopbar();

// Back from a reload in the same tab: the token is in sessionStorage.
const saved = sessionStorage.getItem(TOKEN_KEY);
if (saved) {
  els.login.hidden = true;
  signIn(saved, sessionStorage.getItem(TENANT_KEY) || "", { fromStorage: true });
} else {
  els.token.focus();
}
void theme;
