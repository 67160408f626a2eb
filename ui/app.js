// The alkhub dashboard. It reads the admin API with the token it signed in
// with, kept in this tab's sessionStorage only, and follows
// GET /v1/admin/events (server-sent events read with fetch, so the token
// travels in a header, never in a URL). Every value from the hub is put in
// the page as text, never as HTML.
"use strict";

const TOKEN_KEY = "alkhub.token";
const RETRY_MS = 2000;

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  snapshot: null,
  previous: null,
  stream: null,
  operation: null,
  armed: null,
};

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------------------
// Small DOM helpers.

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "onclick") node.addEventListener("click", value);
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function table(headers, rows, empty) {
  if (rows.length === 0) return el("p", { class: "empty" }, empty);
  return el("table", {},
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows));
}

function card(label, value, id) {
  return el("div", { class: "card" },
    el("div", { class: "label" }, label),
    el("div", { class: "value", id }, value));
}

function labels(map) {
  const entries = Object.entries(map || {});
  if (entries.length === 0) return el("span", { class: "muted" }, "none");
  return entries.map(([k, v]) => el("span", { class: "label-chip" }, `${k}=${v}`));
}

function since(ms) {
  const seconds = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min`;
  return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
}

function number(n, digits) {
  return Number(n).toLocaleString("en-US", { maximumFractionDigits: digits || 0 });
}

function notice(text, bad) {
  const box = $("notice");
  box.textContent = text || "";
  box.hidden = !text;
  box.classList.toggle("bad", Boolean(bad));
}

// A button that acts on a second click within three seconds, so a stray
// click changes nothing. Which button is armed is kept by `key` outside the
// page, which is drawn again on every snapshot.
const ARMED_MS = 3000;

function confirmButton(key, text, className, action) {
  const armed = state.armed && state.armed.key === key && Date.now() < state.armed.until;
  const button = el("button", { type: "button", class: className }, armed ? "Confirm" : text);
  if (armed) button.classList.add("confirm");
  button.addEventListener("click", async () => {
    const stillArmed = state.armed && state.armed.key === key && Date.now() < state.armed.until;
    if (!stillArmed) {
      state.armed = { key, until: Date.now() + ARMED_MS };
      button.textContent = "Confirm";
      button.classList.add("confirm");
      setTimeout(render, ARMED_MS + 50);
      return;
    }
    state.armed = null;
    button.disabled = true;
    try {
      await action();
    } catch (e) {
      notice(e.message, true);
      render();
    }
  });
  return button;
}

// ---------------------------------------------------------------------------
// The admin API.

async function api(method, path) {
  const response = await fetch(path, {
    method,
    headers: { Authorization: `Bearer ${state.token}` },
  });
  const text = await response.text();
  const body = text ? JSON.parse(text) : null;
  if (response.status === 401 || response.status === 403) {
    signOut((body && body.message) || "the token was refused");
    throw new Error((body && body.message) || response.statusText);
  }
  if (!response.ok) {
    throw new Error(`${method} ${path}: ${(body && body.message) || response.statusText}`);
  }
  return body;
}

// Reads the event stream until it ends; each `snapshot` event renders.
async function follow() {
  const controller = new AbortController();
  state.stream = controller;
  while (state.stream === controller) {
    try {
      const response = await fetch("/v1/admin/events", {
        headers: { Authorization: `Bearer ${state.token}`, Accept: "text/event-stream" },
        signal: controller.signal,
      });
      if (response.status === 401 || response.status === 403) {
        const body = await response.json().catch(() => ({}));
        signOut(body.message || "the token was refused");
        return;
      }
      if (!response.ok) throw new Error(`the event stream answered ${response.status}`);
      live(true);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          dispatch(block);
        }
      }
    } catch (e) {
      if (controller.signal.aborted) return;
    }
    live(false);
    await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
  }
}

function dispatch(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  if (event !== "snapshot" || data.length === 0) return;
  state.previous = state.snapshot;
  state.snapshot = JSON.parse(data.join("\n"));
  render();
}

function live(connected) {
  const badge = $("live");
  badge.hidden = false;
  badge.textContent = connected ? "live" : "reconnecting…";
  badge.classList.toggle("stale", !connected);
}

// ---------------------------------------------------------------------------
// Signing in and out.

async function signIn(token) {
  state.token = token;
  const response = await fetch("/v1/admin/config", {
    headers: { Authorization: `Bearer ${token}` },
  });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    state.token = null;
    throw new Error(body.message || `the hub answered ${response.status}`);
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  start();
}

function signOut(reason) {
  if (state.stream) state.stream.abort();
  state.stream = null;
  state.token = null;
  state.snapshot = null;
  sessionStorage.removeItem(TOKEN_KEY);
  $("nav").hidden = true;
  $("signout").hidden = true;
  $("live").hidden = true;
  $("view").replaceChildren();
  $("signin").hidden = false;
  $("signin-error").textContent = reason || "";
  notice("");
}

function start() {
  $("signin").hidden = true;
  $("nav").hidden = false;
  $("signout").hidden = false;
  if (!location.hash) location.hash = "#/overview";
  $("view").replaceChildren(el("p", { class: "muted" }, "Waiting for the hub…"));
  follow();
}

// ---------------------------------------------------------------------------
// Views.

function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [page, ...rest] = hash.split("/");
  return { page: page || "overview", arg: rest.length ? decodeURIComponent(rest.join("/")) : null };
}

function render() {
  const snap = state.snapshot;
  if (!snap) return;
  const { page, arg } = route();
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("current", link.getAttribute("href") === `#/${page}`);
  }
  const views = { overview, sessions, operations, plugins, imports };
  const view = page === "operations" && arg ? operation(snap, arg) : (views[page] || overview)(snap);
  $("view").replaceChildren(view);
}

function overview(snap) {
  const c = snap.counts;
  const calls = snap.calls;
  const figures = calls.counted
    ? [
        card("Calls per second", number(calls.perSecond, 1), "calls-rate"),
        card("Error rate", `${number(calls.errorRate * 100, 1)} %`, "error-rate"),
        card("p99 latency", calls.p99Ms === null ? "–" : `≤ ${number(calls.p99Ms, 2)} ms`, "p99"),
        card("Calls (total)", number(calls.total), "calls-total"),
      ]
    : [card("Calls", "not counted ([metrics] enabled = false)", "calls-total")];
  return el("div", {},
    el("h1", {}, "Overview"),
    el("div", { class: "cards" },
      card("Spokes connected", number(c.spokes), "count-spokes"),
      card("Clients connected", number(c.clients), "count-clients"),
      card("Operations", `${number(c.servedOperations)} served / ${number(c.operations)}`, "count-operations"),
      card("Registrations", number(c.registrations), "count-registrations"),
      card("Calls in flight", number(c.callsInFlight), "calls-in-flight"),
      ...figures),
    el("p", { class: "muted" },
      calls.counted ? `Rates over the last ${number(calls.windowSeconds, 0)} s; updated every second.` : ""));
}

function sessions(snap) {
  const rows = snap.sessions.map((s) => {
    const actions = [
      confirmButton(`close:${s.sessionId}`, "Close session", "danger close-session", async () => {
        await api("DELETE", `/v1/admin/sessions/${s.sessionId}`);
        notice(`Session ${s.sessionId} (${s.kind} ${s.id}) closed.`);
      }),
    ];
    if (s.kind === "spoke") {
      actions.push(confirmButton(`disable:${s.id}`, "Disable spoke", "danger disable-spoke", async () => {
        await api("POST", `/v1/admin/spokes/${encodeURIComponent(s.id)}/disable`);
        notice(`Spoke ${s.id} disabled: its token no longer authenticates.`);
      }));
    }
    return el("tr", { "data-session-id": s.sessionId, "data-principal": s.id },
      el("td", {}, s.kind),
      el("td", { class: "principal" }, s.id),
      el("td", {}, labels(s.labels)),
      el("td", {}, `connected ${since(s.connectedAtMs)}`),
      el("td", { class: "num" }, number(s.serving)),
      el("td", { class: "num" }, number(s.callsOpen)),
      el("td", { class: "num" }, number(s.queuedBytes)),
      el("td", { class: "actions" }, actions));
  });
  const shown = snap.sessions.length < snap.counts.spokes + snap.counts.clients
    ? el("p", { class: "muted" }, `The first ${snap.sessions.length} sessions are shown.`)
    : null;
  return el("div", {},
    el("h1", {}, "Spokes and sessions"),
    table(["Kind", "Id", "Labels", "Session", "Serving", "Calls open", "Queued bytes", ""],
      rows, "No peer is connected."),
    shown);
}

function operations(snap) {
  const before = new Map((state.previous ? state.previous.operations : []).map((o) => [o.id, o]));
  const rows = snap.operations.map((o) => {
    const earlier = before.get(o.id);
    const rate = earlier ? Math.max(0, o.calls - earlier.calls) : 0;
    return el("tr", { "data-operation-id": o.id },
      el("td", {}, el("a", { href: `#/operations/${encodeURIComponent(o.id)}` }, o.id)),
      el("td", {}, o.providers.join(", ")),
      el("td", { class: "num" }, number(o.calls)),
      el("td", { class: "num" }, number(rate)),
      el("td", { class: "num" }, number(o.inFlight)));
  });
  return el("div", {},
    el("h1", {}, "Operations"),
    el("p", { class: "muted" },
      `${number(snap.counts.servedOperations)} of ${number(snap.counts.operations)} operations have a live provider; ` +
      "those are listed here (definitions without one are in the admin API's GET /v1/admin/operations)."),
    table(["Operation", "Providers", "Calls", "Calls in the last second", "In flight"], rows,
      "No operation has a live provider."));
}

function operation(snap, id) {
  const row = snap.operations.find((o) => o.id === id);
  const earlier = state.previous && state.previous.operations.find((o) => o.id === id);
  if (!state.operation || state.operation.id !== id || Date.now() - state.operation.fetched > 2000) {
    const pending = { id, fetched: Date.now(), detail: state.operation && state.operation.id === id ? state.operation.detail : null };
    state.operation = pending;
    api("GET", `/v1/admin/operations/${encodeURIComponent(id)}`)
      .then((detail) => { pending.detail = detail; pending.error = null; })
      .catch((e) => { pending.error = e.message; });
  }
  const detail = state.operation.detail;
  const facts = el("dl", { class: "facts" },
    el("dt", {}, "Calls routed"), el("dd", { id: "operation-calls" }, row ? number(row.calls) : "0"),
    el("dt", {}, "Calls in the last second"),
    el("dd", {}, row && earlier ? number(Math.max(0, row.calls - earlier.calls)) : "0"),
    el("dt", {}, "In flight"), el("dd", {}, row ? number(row.inFlight) : "0"));
  const parts = [el("h1", {}, id), facts];
  if (state.operation.error) parts.push(el("p", { class: "error" }, state.operation.error));
  if (detail) {
    parts.push(el("p", {}, detail.description || el("span", { class: "muted" }, "No description.")));
    parts.push(el("h2", {}, "Live providers"));
    parts.push(table(["Provider", "Kind", "Session", "Declared as", "In flight"],
      (detail.providers || []).map((p) => el("tr", {},
        el("td", {}, p.providerId), el("td", {}, p.kind), el("td", { class: "num" }, p.sessionId),
        el("td", {}, p.preRemapId), el("td", { class: "num" }, p.inFlight))),
      "No live provider: calls answer NO_PROVIDER."));
    parts.push(el("h2", {}, "Registrations"));
    parts.push(table(["Provider", "Status", "Declared as", "Registered"],
      (detail.registrations || []).map((r) => el("tr", {},
        el("td", {}, `${r.providerType || ""} ${r.providerId || ""}`),
        el("td", { class: `status-${r.status}` }, r.status || ""),
        el("td", {}, r.preRemapId || ""),
        el("td", {}, r.registeredAt || ""))),
      "No registration is stored."));
    parts.push(el("h2", {}, "Input schema"));
    parts.push(el("pre", {}, JSON.stringify(detail.inputSchema || {}, null, 2)));
  }
  return el("div", {}, el("p", {}, el("a", { href: "#/operations" }, "← Operations")), ...parts);
}

function plugins(snap) {
  const rows = snap.plugins.plugins.map((p) => el("tr", { "data-plugin": p.name },
    el("td", {}, p.name),
    el("td", {}, p.world || "–"),
    el("td", {}, p.version || "–"),
    el("td", { class: `status-${p.status}` }, p.status),
    el("td", {}, (p.roles || []).join(", ") || el("span", { class: "muted" }, "unused")),
    el("td", { class: "num" }, `${number(p.decisions)} / ${number(p.failures)}`),
    el("td", { class: "num" }, `${number(p.meanLatencyUs, 1)} µs`),
    el("td", {}, p.error || p.lastMessage || ""),
    el("td", { class: "actions" }, p.status === "quarantined"
      ? confirmButton(`lift:${p.name}`, "Lift quarantine", "primary lift-quarantine", async () => {
          await api("POST", `/v1/admin/plugins/${encodeURIComponent(p.name)}/lift-quarantine`);
          notice(`Plugin ${p.name} decides again.`);
        })
      : null)));
  return el("div", {},
    el("h1", {}, "Plugins"),
    table(["Name", "World", "Version", "Status", "Used for", "Decisions / failures", "Mean decision", "Last message", ""],
      rows, "No plugin is loaded."),
    el("p", { class: "muted" },
      `${number(snap.plugins.reloads)} reloads; ${number(snap.plugins.compiled)} components compiled, ` +
      `${number(snap.plugins.cacheHits)} from the cache.`));
}

function imports(snap) {
  const rows = snap.imports.map((i) => el("tr", { "data-import": i.name },
    el("td", {}, i.name),
    el("td", {}, i.kind),
    el("td", { class: "num" }, number(i.operations)),
    el("td", {}, i.target || el("span", { class: "muted" }, "definitions only")),
    el("td", { class: i.serving ? "status-serving" : "status-down" },
      i.serving ? "serving" : (i.enabled && i.target ? "down" : "not served")),
    el("td", { class: "actions" },
      confirmButton(`refresh:${i.name}`, "Refresh", "refresh-import", async () => {
        const done = await api("POST", `/v1/admin/imports/${encodeURIComponent(i.name)}/refresh`);
        notice(`Import ${i.name}: ${done.added.length} added, ${done.updated.length} updated, ${done.removed.length} removed.`);
      }),
      confirmButton(`remove:${i.name}`, "Remove", "danger remove-import", async () => {
        await api("DELETE", `/v1/admin/imports/${encodeURIComponent(i.name)}`);
        notice(`Import ${i.name} removed with its operations.`);
      }))));
  return el("div", {},
    el("h1", {}, "Imports"),
    table(["Name", "Kind", "Operations", "Calls go to", "Provider", ""], rows,
      "No import. Add one with alkhub import … --hub URL."));
}

// ---------------------------------------------------------------------------

$("signin").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("signin-error").textContent = "";
  try {
    await signIn($("signin-token").value.trim());
    $("signin-token").value = "";
  } catch (e) {
    $("signin-error").textContent = e.message;
  }
});
$("signout").addEventListener("click", () => signOut(""));
window.addEventListener("hashchange", () => {
  state.operation = null;
  render();
});

if (state.token) start();
else signOut("");
