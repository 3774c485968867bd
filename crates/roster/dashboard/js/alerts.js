// Alerts: firing ones (GET /alerts?state=firing, then the stream's `alert`
// events) with an Acknowledge button (POST /alerts/{id}/ack), and the most
// recent resolved ones.

import { qs } from "./api.js";
import { byId, clear, h, perFrame, setText, timeEl } from "./dom.js";

const RESOLVED_KEPT = 20;

const progress = (a) => (a.state === "resolved" ? 2 : 0) + (a.ackedAt ? 1 : 0);

export function createAlerts(getApi, { onOpenRoom, onCount }) {
  /** id → Alert */
  const alerts = new Map();
  const list = byId("alerts-list");
  const resolvedList = byId("alerts-resolved");
  const empty = byId("alerts-empty");
  const count = byId("alerts-count");
  const errorEl = byId("alerts-error");
  const pending = new Set();
  const schedule = perFrame(render);

  async function load() {
    const api = getApi();
    const asked = Date.now();
    try {
      const [firing, resolved] = await Promise.all([
        api.get(`/alerts${qs({ state: "firing", limit: 100 })}`),
        api.get(`/alerts${qs({ state: "resolved", limit: RESOLVED_KEPT })}`),
      ]);
      // An alert only moves forward (firing → acked, → resolved): keep whichever
      // of the list and the stream's events is further along.
      for (const a of [...(resolved.items || []), ...(firing.items || [])]) {
        const known = alerts.get(a.id);
        if (!known || progress(a) >= progress(known)) alerts.set(a.id, a);
      }
      // One shown as firing that the server no longer lists as firing resolved
      // while the stream was down (and is older than the resolved list shows).
      // (Only one that fired well before this request: a newer one may have come
      // through the stream while the list was on its way.)
      const firingIds = new Set((firing.items || []).map((a) => a.id));
      if (!firing.nextCursor)
        for (const [id, a] of alerts)
          if (a.state === "firing" && !firingIds.has(id) && Date.parse(a.firedAt) < asked - 10_000) alerts.delete(id);
      errorEl.hidden = true;
    } catch (e) {
      errorEl.hidden = false;
      setText(errorEl, `Alerts unavailable: ${e.message}`);
    }
    schedule();
  }

  async function ack(id, button) {
    if (pending.has(id)) return;
    pending.add(id);
    button.disabled = true;
    setText(button, "Acknowledging…");
    try {
      const a = await getApi().post(`/alerts/${encodeURIComponent(id)}/ack`);
      if (a && a.id !== undefined) alerts.set(a.id, a);
      errorEl.hidden = true;
    } catch (e) {
      errorEl.hidden = false;
      setText(errorEl, `Could not acknowledge: ${e.message}`);
    } finally {
      pending.delete(id);
      render();
      // Keep the keyboard user where they were.
      const item = list.querySelector(`li[data-alert-id="${CSS.escape(String(id))}"]`);
      if (item) item.focus();
    }
  }

  function item(a) {
    const acked = !!a.ackedAt;
    const li = h(
      "li",
      {
        class: "alert",
        tabindex: "-1",
        "data-testid": "alert-item",
        "data-alert-id": a.id,
        "data-state": a.state,
        "data-severity": a.severity,
        "data-rule-id": a.ruleId,
        "data-subject": a.subject ?? "",
        "data-acked": acked ? "true" : "false",
      },
      h(
        "div",
        { class: "alert-top" },
        h("span", { class: `badge sev-${a.severity}` }, a.severity),
        h("span", { class: "alert-rule" }, a.ruleName || a.kind),
        h("span", { class: "muted small" }, a.kind),
      ),
      h("p", { class: "alert-msg" }, a.message),
    );
    if (a.subject && a.scope !== "tenant") {
      li.querySelector(".alert-top").appendChild(
        h("button", { type: "button", class: "btn btn-small btn-ghost", onclick: () => onOpenRoom(a.subject), title: "Open this room" }, a.subject),
      );
    }
    const meta = h("div", { class: "alert-meta" });
    const when = h("span", {}, "fired ", timeEl(a.firedAt, true));
    if (a.state === "resolved" && a.resolvedAt) when.append(" · resolved ", timeEl(a.resolvedAt, true));
    meta.appendChild(when);
    if (acked) {
      meta.appendChild(h("span", { class: "acked", "data-testid": "alert-acked" }, "✓ acked", a.ackedBy ? ` by ${a.ackedBy}` : "", " ", timeEl(a.ackedAt)));
    } else if (a.state === "firing") {
      const btn = h("button", { type: "button", class: "btn btn-small", "data-testid": "alert-ack" }, "Acknowledge");
      btn.setAttribute("aria-label", `Acknowledge: ${a.message}`);
      btn.addEventListener("click", () => ack(a.id, btn));
      if (pending.has(a.id)) {
        btn.disabled = true;
        btn.textContent = "Acknowledging…";
      }
      meta.appendChild(btn);
    }
    li.appendChild(meta);
    return li;
  }

  function render() {
    const byTime = (f) => (x, y) => Date.parse(y[f] || y.firedAt) - Date.parse(x[f] || x.firedAt);
    const firing = [...alerts.values()].filter((a) => a.state === "firing").sort(byTime("firedAt"));
    const resolved = [...alerts.values()].filter((a) => a.state !== "firing").sort(byTime("resolvedAt"));
    // Forget resolved ones beyond what is shown.
    for (const a of resolved.slice(RESOLVED_KEPT)) alerts.delete(a.id);

    const active = document.activeElement;
    const focusId = active && active.closest && active.closest("li[data-alert-id]")?.dataset.alertId;
    const focusAck = active && active.dataset && active.dataset.testid === "alert-ack";

    clear(list);
    for (const a of firing) list.appendChild(item(a));
    clear(resolvedList);
    for (const a of resolved.slice(0, RESOLVED_KEPT)) resolvedList.appendChild(item(a));
    if (!resolved.length) resolvedList.appendChild(h("li", { class: "muted small" }, "None recently."));

    if (focusId && !document.contains(active)) {
      const li = document.querySelector(`li[data-alert-id="${CSS.escape(focusId)}"]`);
      const target = (focusAck && li && li.querySelector("[data-testid=alert-ack]")) || li;
      if (target) target.focus();
    }

    empty.hidden = firing.length > 0;
    const unacked = firing.filter((a) => !a.ackedAt).length;
    setText(count, firing.length ? `${firing.length} firing${unacked ? `, ${unacked} not acknowledged` : ""}` : "none firing");
    onCount(firing.length);
  }

  return {
    load,
    /** An `alert` stream event. */
    apply(a) {
      if (!a || a.id === undefined) return;
      const known = alerts.get(a.id);
      if (known && progress(a) < progress(known)) return;
      alerts.set(a.id, a);
      schedule();
    },
    reset() {
      alerts.clear();
      schedule();
    },
  };
}
