// Small DOM helpers: every text goes through textContent / setAttribute, never
// innerHTML (room keys, user ids and alert messages come from clients).

/**
 * h("td", {class: "num", dataset: {key}}, "text", childNode)
 * Attributes: class, dataset (object), on<Event> (function), hidden (bool),
 * anything else with setAttribute (null/undefined/false skip it).
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") for (const [dk, dv] of Object.entries(v)) el.dataset[dk] = String(dv);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2).toLowerCase(), v);
    else if (k === "text") el.textContent = String(v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

export const $ = (sel, root = document) => root.querySelector(sel);
export const byId = (id) => document.getElementById(id);

/** Sets text only when it changed (keeps the DOM quiet for live updates). */
export function setText(el, text) {
  const t = String(text);
  if (el.textContent !== t) el.textContent = t;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
}

const nf = new Intl.NumberFormat();
export const fmtNum = (n) => (typeof n === "number" && Number.isFinite(n) ? nf.format(n) : "–");

const pad = (n) => String(n).padStart(2, "0");

/** HH:MM:SS in local time. */
export function fmtTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "–";
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** "14:03:05" today, else "2026-11-26 14:03". */
export function fmtDateTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "–";
  const now = new Date();
  if (d.toDateString() === now.toDateString()) return fmtTime(iso);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** A <time> element with the machine-readable instant and a local rendering. */
export function timeEl(iso, long = false) {
  return h("time", { datetime: iso, title: iso }, long ? fmtDateTime(iso) : fmtTime(iso));
}

/** Coalesces calls into one per animation frame. */
export function perFrame(fn) {
  let queued = false;
  return () => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => {
      queued = false;
      fn();
    });
  };
}
