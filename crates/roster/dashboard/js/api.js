// REST and live-stream client of the Roster API (/api/v1): the same calls any
// script would make, with `Authorization: Bearer <token>` (and `X-Tenant` with
// the operator admin key).

export const API = "/api/v1";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || `HTTP ${status}`);
    this.status = status;
    this.code = code || "";
  }
}

export function createApi(auth) {
  const headers = (extra = {}) => {
    const h = { authorization: `Bearer ${auth.token}`, ...extra };
    if (auth.tenant) h["x-tenant"] = auth.tenant;
    return h;
  };

  async function request(method, path, body, signal) {
    let res;
    try {
      res = await fetch(API + path, {
        method,
        headers: headers(body !== undefined ? { "content-type": "application/json", accept: "application/json" } : { accept: "application/json" }),
        body: body !== undefined ? JSON.stringify(body) : undefined,
        cache: "no-store",
        signal,
      });
    } catch (e) {
      if (e && e.name === "AbortError") throw e;
      throw new ApiError(0, "network", "The server cannot be reached.");
    }
    if (res.status === 204) return null;
    const text = await res.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      /* not JSON */
    }
    if (!res.ok) {
      const err = json && json.error ? json.error : {};
      throw new ApiError(res.status, err.code, err.message || `HTTP ${res.status}`);
    }
    return json;
  }

  return {
    get: (path, signal) => request("GET", path, undefined, signal),
    post: (path, body, signal) => request("POST", path, body ?? {}, signal),
    /** Opens GET /stream; resolves with the Response (status checked by the caller). */
    openStream: (signal) =>
      fetch(API + "/stream", { headers: headers({ accept: "text/event-stream" }), cache: "no-store", signal }),
  };
}

/** Path segment encoding for a room key (`Order:123`, `a/b@c` …). */
export const seg = (s) => encodeURIComponent(s);

/** Query string from an object (undefined/null/"" skipped). */
export function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") u.set(k, String(v));
  const s = u.toString();
  return s ? `?${s}` : "";
}

/**
 * The stream's body as Server-Sent Events: calls onEvent(name, data) for each
 * event with a data line (data parsed as JSON when it is JSON). Keep-alive
 * comments (lines starting with ":") are ignored. Resolves when the body ends.
 */
export async function readEvents(res, onEvent) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    buf = buf.replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      dispatchBlock(block, onEvent);
    }
  }
  buf += decoder.decode();
  if (buf.trim()) dispatchBlock(buf, onEvent);
}

function dispatchBlock(block, onEvent) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line === "" || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") name = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return;
  const raw = data.join("\n");
  let parsed = raw;
  try {
    parsed = JSON.parse(raw);
  } catch {
    /* keep the text */
  }
  onEvent(name, parsed);
}
