// Shared helpers: the API client, a tiny DOM builder, formatting of states, dates, durations.

/** An error the API answered: its status and JSON body ({error, message, ...}). */
export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

/** Calls the API (relative to the page, so the UI works under any mount prefix). */
export async function api(path, { method = "GET", json, form } = {}) {
  const init = { method, headers: { Accept: "application/json" } };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form !== undefined) {
    init.body = form;
  }
  const res = await fetch("api/v1/" + path, init);
  let body = null;
  const text = await res.text();
  try { body = text ? JSON.parse(text) : null; } catch { body = { message: text }; }
  if (!res.ok) throw new ApiError(res.status, body);
  return body;
}

/** Opens a Server-Sent Events stream of the API; returns it (close it when leaving). */
export function stream(path, handlers) {
  const es = new EventSource("api/v1/" + path);
  for (const [event, fn] of Object.entries(handlers)) {
    es.addEventListener(event, (e) => fn(e.data ? JSON.parse(e.data) : null, e));
  }
  return es;
}

/** h("tag.class#id", {attrs}, ...children): builds an element. */
export function h(spec, attrs = {}, ...children) {
  const [tagAndClasses, id] = spec.split("#");
  const [tag, ...classes] = tagAndClasses.split(".");
  const el = document.createElement(tag || "div");
  if (classes.length) el.className = classes.join(" ");
  if (id) el.id = id;
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "style" && typeof v === "object") Object.assign(el.style, v);
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// A symbol per state: the state is never told by colour alone.
const ICONS = {
  CREATED: "○", QUEUED: "◷", RUNNING: "▶", PAUSED: "❚❚", RESTARTED: "↻", KILLING: "✕…",
  SUCCESS: "✓", WARNING: "!", FAILED: "✗", KILLED: "✕", CANCELLED: "⊘", RETRYING: "↻",
  RETRIED: "↻", SKIPPED: "↷",
};

/** A state badge: icon, text and colour. */
export function badge(state) {
  return h("span.badge.s-" + String(state).toLowerCase(), { title: state },
    h("span", { "aria-hidden": "true" }, ICONS[state] || "•"), " ", state);
}

export const TERMINAL = new Set(["SUCCESS", "WARNING", "FAILED", "KILLED", "CANCELLED", "SKIPPED", "RETRIED"]);

export function fmtDate(epoch) {
  if (epoch === null || epoch === undefined) return "—";
  const d = new Date(epoch * 1000);
  return d.toISOString().replace("T", " ").slice(0, 19);
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const m = Math.floor(seconds / 60), s = Math.round(seconds % 60);
  if (m < 60) return `${m} min ${s} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function toast(message) {
  const el = document.getElementById("toast");
  el.textContent = message;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.textContent = ""; }, 6000);
}

/** An alert box (role=alert) for an API error: its message and, if any, its problems. */
export function errorBox(err) {
  const body = err instanceof ApiError ? err.body : {};
  const problems = body.problems || [];
  return h("div.error", { role: "alert" },
    h("strong", {}, err instanceof ApiError ? `${err.status} ${body.error || "error"}: ` : "Error: "),
    err.message,
    problems.length ? h("ul", {}, problems.map((p) => h("li", {}, problemText(p)))) : null);
}

export function problemText(p) {
  const where = [p.file, p.line && `line ${p.line}`, p.field].filter(Boolean).join(", ");
  return where ? `${where}: ${p.message}` : p.message;
}

export function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (Array.isArray(v)) v.forEach((x) => u.append(k, x));
    else if (v !== undefined && v !== null && v !== "") u.set(k, v);
  }
  const s = u.toString();
  return s ? "?" + s : "";
}

export function execLink(id, text) {
  return h("a", { href: `#/executions/${encodeURIComponent(id)}` }, text || id);
}
