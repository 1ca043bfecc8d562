// The Execution page: header, actions, and the Gantt, Topology, Logs, Outputs, Metrics and
// History tabs, kept live by the API's follow stream.
import { formJson, inputField } from "./forms.js";
import {
  api, badge, clear, errorBox, execLink, fmtDate, fmtDuration, h, qs, stream, TERMINAL, toast,
} from "./util.js";

const TABS = ["Gantt", "Topology", "Logs", "Outputs", "Metrics", "History"];

export async function executionPage(main, id, params, onLeave) {
  let ex = await api(`executions/${encodeURIComponent(id)}`);
  let flow = null;
  try {
    flow = await api(`flows/${encodeURIComponent(ex.namespace)}/${encodeURIComponent(ex.flow_id)}` + qs({ revision: ex.flow_revision }));
  } catch { /* a flow no longer registered: the page shows the runs without the graph */ }
  let tab = TABS.includes(params.get("tab")) ? params.get("tab") : "Gantt";
  const header = h("div");
  const actions = h("div.actions");
  const panel = h("div.panel", { role: "tabpanel", id: "tabpanel", tabindex: "0" });
  const tabButtons = TABS.map((t) => h("button", {
    role: "tab", id: "tab-" + t, "aria-controls": "tabpanel",
    onclick: () => select(t), onkeydown: (e) => arrows(e, t),
  }, t));
  const tablist = h("div.tabs", { role: "tablist", "aria-label": "Execution views" }, tabButtons);
  const logs = new LogView(id, onLeave);
  const chart = new GanttView();
  let links = null;
  let linksKey = "";
  let actionsKey = "";

  function arrows(e, t) {
    const i = TABS.indexOf(t);
    const next = e.key === "ArrowRight" ? (i + 1) % TABS.length : e.key === "ArrowLeft" ? (i + TABS.length - 1) % TABS.length : -1;
    if (next >= 0) { e.preventDefault(); select(TABS[next]); tabButtons[next].focus(); }
  }
  function select(t) {
    tab = t;
    history.replaceState(null, "", `#/executions/${encodeURIComponent(id)}?tab=${t}`);
    render();
  }
  function render() {
    tabButtons.forEach((b, i) => {
      const on = TABS[i] === tab;
      b.setAttribute("aria-selected", on ? "true" : "false");
      b.tabIndex = on ? 0 : -1;
    });
    panel.setAttribute("aria-labelledby", "tab-" + tab);
    swap(header, headerView(ex, links));
    loadLinks();
    // Rebuilt only when what they offer changes: a form being filled keeps its values and focus.
    const key = `${ex.state}:${ex.task_runs.length}:${ex.attempt_number}`;
    if (key !== actionsKey) { actionsKey = key; clear(actions, actionsView(ex, flow, () => refresh())); }
    if (tab === "Logs") { if (!panel.contains(logs.el)) clear(panel, logs.el); logs.update(ex); return; }
    if (tab === "Gantt") { if (!panel.contains(chart.el)) clear(panel, chart.el); chart.update(ex); return; }
    const view = { Topology: topology, Outputs: outputs, Metrics: metrics, History: historyView }[tab];
    clear(panel, view(ex, flow));
  }
  async function loadLinks() {
    // Read again when a subflow starts, or the state changes (a restart, a replay's end).
    const key = `${ex.state}:${ex.task_runs.filter((tr) => tr.child_execution_id).length}`;
    if (key === linksKey) return;
    linksKey = key;
    try {
      links = await api(`executions/${encodeURIComponent(id)}/links`);
      swap(header, headerView(ex, links));
    } catch { linksKey = ""; /* the header keeps what the tree itself says */ }
  }
  let es = null;
  function follow() {
    // The stream ends with the execution; an action (restart, resume) makes it live again.
    if (es && es.readyState !== EventSource.CLOSED) return;
    const mine = stream(`executions/${encodeURIComponent(id)}/follow`, {
      execution: (data) => { ex = data; render(); },
      end: () => mine.close(),
    });
    es = mine;
  }
  async function refresh() {
    ex = await api(`executions/${encodeURIComponent(id)}`);
    render();
    follow();
  }
  clear(main, header, actions, tablist, panel);
  render();
  // An ended execution's stream would only send the tree just drawn (and redraw it).
  if (!TERMINAL.has(ex.state)) follow();
  onLeave(() => es && es.close());
}

/** Replace ``el``'s content only if it differs; a focused link keeps the focus. */
function swap(el, children) {
  const next = h("div", {}, children);
  if (next.innerHTML === el.innerHTML) return;
  const focused = el.contains(document.activeElement) ? document.activeElement.getAttribute("href") : null;
  el.replaceChildren(...next.childNodes);
  if (focused) el.querySelector(`[href="${CSS.escape(focused)}"]`)?.focus();
}

// -- header and actions -------------------------------------------------------------------
function linkedView(l) {
  return h("span.linked", {}, execLink(l.id), l.state ? [" ", badge(l.state)] : null);
}

function headerView(ex, links) {
  const rows = [
    ["Flow", h("a", { href: `#/flows/${encodeURIComponent(ex.namespace)}/${encodeURIComponent(ex.flow_id)}` }, `${ex.namespace}.${ex.flow_id}`), ` rev ${ex.flow_revision}`],
    ["Start", fmtDate(ex.history[0][1]) + " UTC"],
    ["Duration", fmtDuration(ex.duration)],
    ["Trigger", ex.trigger ? `${ex.trigger.type || ""} ${ex.trigger.id || ""}`.trim() : "manual"],
  ];
  if (Object.keys(ex.labels || {}).length) rows.push(["Labels", Object.entries(ex.labels).map(([k, v]) => h("span.label", {}, `${k}: ${v}`))]);
  // The links endpoint adds the linked executions' states and the replays; until it
  // answered, the tree's own ids.
  const parent = links ? links.parent : ex.parent_execution_id && { id: ex.parent_execution_id };
  const original = links ? links.original : ex.original_execution_id && { id: ex.original_execution_id };
  const children = links ? links.children : ex.task_runs.filter((tr) => tr.child_execution_id)
    .map((tr) => ({ id: tr.child_execution_id, taskId: tr.task_id, value: tr.value }));
  if (parent) rows.push(["Parent", linkedView(parent), " (this is its subflow)"]);
  if (original) rows.push(["Replay of", linkedView(original)]);
  if (links && links.replays.length) rows.push(["Replays", h("ul.links", {}, links.replays.map((r) => h("li", {}, linkedView(r), h("span.muted", {}, ` ${fmtDate(Date.parse(r.start_date) / 1000)} UTC`))))]);
  if (ex.attempt_number > 1) rows.push(["Attempt", `${ex.attempt_number} (restarted)`]);
  if (links && links.restarts.length) rows.push(["Restarts", links.restarts.map((r) => fmtDate(Date.parse(r.date) / 1000)).join(", ") + " UTC"]);
  if (children.length) {
    rows.push(["Subflows", h("ul.links", {}, children.map((c) => h("li", {},
      execLink(c.id, `${c.taskId}${c.value !== null && c.value !== undefined ? ` [${c.value}]` : ""} → ${c.id}`),
      c.state ? [" ", badge(c.state)] : null)))]);
  }
  if (Object.keys(ex.inputs || {}).length) rows.push(["Inputs", valueTree(ex.inputs, ex)]);
  if (ex.error) rows.push(["Error", h("span.err", {}, ex.error)]);
  return [
    h("div.head", {}, h("h1", {}, "Execution ", h("code", {}, ex.id)), badge(ex.state)),
    h("dl.meta", {}, rows.map(([k, ...v]) => [h("dt", {}, k), h("dd", {}, v)])),
  ];
}

function pauseTask(ex, flow) {
  // The paused Pause task run, and its on_resume inputs from the flow's graph.
  const paused = [...ex.task_runs].reverse().find((tr) => tr.state === "PAUSED");
  if (!paused || !flow || !flow.graph) return paused ? { run: paused, inputs: [] } : null;
  let found = null;
  (function walk(node) {
    if (node.id === paused.task_id && node.type === "Pause") found = node;
    (node.groups || []).forEach((g) => g.nodes.forEach(walk));
  })(flow.graph);
  return { run: paused, inputs: (found && found.onResume) || [] };
}

function actionsView(ex, flow, refresh) {
  const msg = h("div.action-msg");
  const call = async (what, opts) => {
    clear(msg);
    try {
      const res = await api(`executions/${encodeURIComponent(ex.id)}/${what}`, { method: "POST", ...opts });
      toast(`${what}: done`);
      if (res && res.id && res.id !== ex.id) location.hash = `#/executions/${encodeURIComponent(res.id)}`;
      else await refresh();
    } catch (err) { clear(msg, errorBox(err)); }
  };
  const running = ["CREATED", "QUEUED", "RUNNING", "PAUSED", "RETRYING", "RESTARTED"].includes(ex.state);
  const buttons = [];
  if (running) {
    buttons.push(h("button.danger", { onclick: () => { if (confirm(`Kill execution ${ex.id}?`)) call("kill"); } }, "Kill"));
    if (ex.state !== "PAUSED") buttons.push(h("button", { onclick: () => call("pause") }, "Pause"));
  }
  if (["FAILED", "KILLED", "WARNING"].includes(ex.state)) buttons.push(h("button", { onclick: () => call("restart") }, "Restart"));
  let resumeForm = null;
  if (ex.state === "PAUSED") {
    const p = pauseTask(ex, flow);
    const inputs = p ? p.inputs : [];
    resumeForm = h("form.resume", {
      "aria-label": "Resume",
      onsubmit: async (e) => {
        e.preventDefault();
        await call("resume", { json: formJson(resumeForm) });
      },
    }, h("h2", {}, "Resume", p ? ` (${p.run.task_id})` : ""),
    inputs.map((i) => inputField(i, "resume")),
    h("button.primary", { type: "submit" }, "Resume"));
  }
  let replay = null;
  if (ex.state !== "RUNNING" && ex.task_runs.length) {
    const sel = h("select#replay-from", {}, ex.task_runs.map((tr) => h("option", { value: tr.id }, `${tr.task_id}${tr.value !== null ? ` [${tr.value}]` : ""} — ${tr.state}`)));
    replay = h("form.inline", {
      "aria-label": "Replay",
      onsubmit: (e) => { e.preventDefault(); call("replay", { json: { taskRunId: sel.value } }); },
    }, h("label", { for: "replay-from" }, "Replay from"), sel, h("button", { type: "submit" }, "Replay"));
  }
  return [h("div.buttons", {}, buttons, replay), resumeForm, msg];
}

// -- Gantt ---------------------------------------------------------------------------------
function depthOf(ex) {
  const byId = new Map(ex.task_runs.map((tr) => [tr.id, tr]));
  const depth = new Map();
  const get = (tr) => {
    if (depth.has(tr.id)) return depth.get(tr.id);
    const parent = tr.parent_task_run_id && byId.get(tr.parent_task_run_id);
    const d = parent ? get(parent) + 1 : 0;
    depth.set(tr.id, d);
    return d;
  };
  ex.task_runs.forEach(get);
  return depth;
}

/** Task runs in tree order (each flowable followed by its children). */
function treeOrder(ex) {
  const kids = new Map();
  const roots = [];
  const ids = new Set(ex.task_runs.map((t) => t.id));
  for (const tr of ex.task_runs) {
    if (tr.parent_task_run_id && ids.has(tr.parent_task_run_id)) {
      if (!kids.has(tr.parent_task_run_id)) kids.set(tr.parent_task_run_id, []);
      kids.get(tr.parent_task_run_id).push(tr);
    } else roots.push(tr);
  }
  const out = [];
  const stack = [...roots].reverse();
  while (stack.length) {
    const tr = stack.pop();
    out.push(tr);
    stack.push(...(kids.get(tr.id) || []).slice().reverse());
  }
  return out;
}

/** The Gantt chart, redrawn in place: a row is rebuilt only when its task run changed (or
 * runs, its bar growing), rows are moved rather than recreated, so focus and scroll stay. */
class GanttView {
  constructor() {
    this.rows = new Map();
    this.ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => h("span.tick", { style: { left: `${f * 100}%` } }));
    this.axis = h("div.grow.gaxis", { role: "row" }, h("div.glabel", { role: "columnheader" }, "Task run"),
      h("div.gtrack", { role: "columnheader" }, this.ticks), h("div.gdur", { role: "columnheader" }, "Duration"));
    // One tab stop for the whole chart (roving tabindex): arrows move between rows.
    this.table = h("div.gantt", {
      role: "table", "aria-label": "Gantt chart of task runs (arrow keys move between rows)",
      onkeydown: (e) => this.arrows(e),
    }, this.axis);
    this.current = null;
    this.empty = h("p.empty", {}, "No task runs yet.");
    this.el = h("div", {}, this.empty);
  }
  update(ex) {
    if (!ex.task_runs.length) { if (!this.el.contains(this.empty)) clear(this.el, this.empty); return; }
    if (!this.el.contains(this.table)) clear(this.el, this.table);
    const start = ex.history[0][1];
    const now = Date.now() / 1000;
    const end = Math.max(ex.end_date ? ex.history[ex.history.length - 1][1] : now,
      ...ex.task_runs.map((tr) => tr.history[tr.history.length - 1][1]), start + 0.001);
    const span = end - start;
    // Bars sit on the axis through --s/--d over --span: a longer axis moves no row.
    this.table.style.setProperty("--span", span.toFixed(6));
    this.ticks.forEach((t, i) => { t.textContent = "+" + fmtDuration((i / 4) * span); });
    const depth = depthOf(ex);
    const seen = new Set();
    let prev = this.axis;
    for (const tr of treeOrder(ex)) {
      seen.add(tr.id);
      const running = !TERMINALISH(tr.state);
      const sig = JSON.stringify([tr.state, tr.history.length, tr.attempts, depth.get(tr.id)]);
      let row = this.rows.get(tr.id);
      if (!row) {
        row = h("div.grow", { "data-task-run": tr.id, role: "row", tabindex: "-1" });
        this.rows.set(tr.id, row);
      }
      if (running || row.dataset.sig !== sig) {
        row.dataset.sig = sig;
        this.fill(row, tr, running ? now : null, depth.get(tr.id), start);
      }
      if (prev.nextElementSibling !== row) prev.after(row);
      prev = row;
    }
    for (const [trId, row] of this.rows) if (!seen.has(trId)) { row.remove(); this.rows.delete(trId); }
    if (!this.current || !this.current.isConnected) this.rove(this.axis.nextElementSibling, false);
  }
  rove(row, focus) {
    if (!row) return;
    if (this.current && this.current !== row) this.current.tabIndex = -1;
    row.tabIndex = 0;
    this.current = row;
    if (focus) row.focus();
  }
  arrows(e) {
    const row = e.target.closest(".grow:not(.gaxis)");
    if (!row) return;
    const next = { ArrowDown: row.nextElementSibling, ArrowUp: row.previousElementSibling,
      Home: this.axis.nextElementSibling, End: this.table.lastElementChild }[e.key];
    if (next && next !== this.axis) { e.preventDefault(); this.rove(next, true); }
  }
  fill(row, tr, now, depth, start) {
    const last = tr.history[tr.history.length - 1][1];
    const trEnd = now === null ? last : Math.max(now, last);
    const trStart = tr.history[0][1];
    const attempts = tr.attempts.map((a) => {
      const aEnd = a.end ?? trEnd;
      const failed = a.state === "FAILED" || a.state === "KILLED";
      return h("span.attempt.s-" + a.state.toLowerCase() + (failed ? ".failed" : ""), {
        "data-attempt": a.number,
        title: `attempt ${a.number}: ${a.state} (${fmtDuration(aEnd - a.start)})${a.error ? " — " + a.error : ""}`,
        style: { left: `${((a.start - trStart) / Math.max(trEnd - trStart, 0.001)) * 100}%`, width: `${Math.max(((aEnd - a.start) / Math.max(trEnd - trStart, 0.001)) * 100, 2)}%` },
      }, failed ? "✗" : "");
    });
    const label = tr.task_id + (tr.value !== null && tr.value !== undefined ? ` [${tr.value}]` : "");
    const bar = h("div.gantt-bar.s-" + tr.state.toLowerCase(), {
      title: `${label}: ${tr.state}, ${fmtDuration(trEnd - trStart)}, ${tr.attempts.length} attempt(s)`,
    }, attempts);
    bar.style.setProperty("--s", (trStart - start).toFixed(6));
    bar.style.setProperty("--d", (trEnd - trStart).toFixed(6));
    row.dataset.task = tr.task_id;
    row.dataset.state = tr.state;
    row.setAttribute("aria-label", `${label}: ${tr.state}, ${fmtDuration(trEnd - trStart)}, ${tr.attempts.length} attempt(s)`);
    row.replaceChildren(
      h("div.glabel", { role: "rowheader", style: { paddingLeft: `${0.4 + depth * 1.1}rem` } },
        h("span", {}, label), " ", badge(tr.state)),
      h("div.gtrack", { role: "cell" }, bar),
      h("div.gdur", { role: "cell" }, fmtDuration(trEnd - trStart)));
  }
}

function TERMINALISH(state) {
  return ["SUCCESS", "WARNING", "FAILED", "KILLED", "CANCELLED", "SKIPPED", "RETRIED", "PAUSED"].includes(state);
}

// -- Topology ------------------------------------------------------------------------------
function topology(ex, flow) {
  if (!flow || !flow.graph) return h("p.empty", {}, "The flow of this execution is not available here.");
  const runs = new Map();
  for (const tr of ex.task_runs) {
    if (!runs.has(tr.task_id)) runs.set(tr.task_id, []);
    runs.get(tr.task_id).push(tr);
  }
  const nodeView = (node) => {
    const trs = runs.get(node.id) || [];
    const last = trs.length ? trs[trs.length - 1].state : null;
    const cls = "node" + (last ? ".s-" + last.toLowerCase() : ".s-none") + (node.groups ? ".flowable" : "");
    return h("div." + cls.replace(/^node\./, "node."), { "data-node": node.id, "data-state": last || "NOT_RUN" },
      h("div.ntitle", {}, h("strong", {}, node.id), h("span.muted", {}, " " + node.type)),
      h("div.nstate", {}, last ? badge(last) : h("span.badge.s-none", {}, "○ not run"),
        trs.length > 1 ? h("span.muted", {}, ` ×${trs.length}`) : null),
      node.dependsOn && node.dependsOn.length ? h("div.deps", {}, "after: " + node.dependsOn.join(", ")) : null,
      node.subflow ? h("div.deps", {}, "subflow: " + node.subflow) : null,
      (node.groups || []).map(groupView));
  };
  const groupView = (g) => {
    let body;
    if (g.mode === "dag") {
      // Layers: a node sits one layer below the deepest node it depends on.
      const level = new Map();
      const byId = new Map(g.nodes.map((n) => [n.id, n]));
      const lv = (n, seen = new Set()) => {
        if (level.has(n.id)) return level.get(n.id);
        if (seen.has(n.id)) return 0;
        seen.add(n.id);
        const l = Math.max(-1, ...(n.dependsOn || []).filter((d) => byId.has(d)).map((d) => lv(byId.get(d), seen))) + 1;
        level.set(n.id, l);
        return l;
      };
      g.nodes.forEach((n) => lv(n));
      const layers = [];
      g.nodes.forEach((n) => { (layers[level.get(n.id)] ||= []).push(n); });
      body = h("div.seq", {}, layers.map((layer, i) => [i ? h("div.arrow", { "aria-hidden": "true" }, "↓") : null, h("div.par", {}, layer.map(nodeView))]));
    } else if (g.mode === "parallel") {
      body = h("div.par", {}, g.nodes.map(nodeView));
    } else {
      body = h("div.seq", {}, g.nodes.map((n, i) => [i ? h("div.arrow", { "aria-hidden": "true" }, "↓") : null, nodeView(n)]));
    }
    const title = g.mode === "foreach" ? "for each value" : g.mode === "parallel" ? "parallel" : g.mode === "dag" ? "dag" : g.name;
    return h("div.group.g-" + g.mode + (g.name === "errors" ? ".g-errors" : g.name === "finally" ? ".g-finally" : ""), {},
      h("div.gtitle", {}, g.name === "tasks" ? title : g.name), body);
  };
  return h("div.topology", { "aria-label": "Topology of the flow" }, (flow.graph.groups || []).map(groupView));
}

// -- Logs ----------------------------------------------------------------------------------
class LogView {
  constructor(id, onLeave) {
    this.id = id;
    this.lines = [];
    this.names = new Map();
    this.task = h("select#log-task", { onchange: () => this.draw() }, h("option", { value: "" }, "all tasks"));
    this.level = h("select#log-level", { onchange: () => this.draw() },
      ["", "DEBUG", "INFO", "WARNING", "ERROR"].map((l) => h("option", { value: l }, l ? `${l} and above` : "all levels")));
    this.body = h("tbody");
    this.el = h("div", {},
      h("div.filters", {}, h("label", { for: "log-task" }, "Task"), this.task, h("label", { for: "log-level" }, "Level"), this.level),
      h("div.scroll", {}, h("table.list.logs", {}, h("caption.sr-only", {}, "Logs"),
        h("thead", {}, h("tr", {}, ["Time (UTC)", "Level", "Task", "Message", "Trace id"].map((c) => h("th", { scope: "col" }, c)))),
        this.body)));
    this.es = null;
    this.onLeave = onLeave;
  }
  update(ex) {
    for (const tr of ex.task_runs) this.names.set(tr.id, tr.task_id + (tr.value !== null ? ` [${tr.value}]` : ""));
    const have = new Set([...this.task.options].map((o) => o.value));
    for (const [trId, name] of this.names) if (!have.has(trId)) this.task.append(h("option", { value: trId }, name));
    if (!this.es) {
      this.es = stream(`executions/${encodeURIComponent(this.id)}/logs?follow=true`, {
        message: (line) => { this.lines.push(line); this.draw(); },
        end: () => this.es.close(),
      });
      this.onLeave(() => this.es.close());
    }
  }
  draw() {
    const order = { DEBUG: 0, INFO: 1, WARNING: 2, WARN: 2, ERROR: 3, CRITICAL: 4 };
    const min = this.level.value ? order[this.level.value] : -1;
    const rows = this.lines.filter((l) => (!this.task.value || l.task_run_id === this.task.value) && (order[l.level] ?? 1) >= min);
    clear(this.body, rows.map((l) => h("tr.l-" + l.level.toLowerCase(), {},
      h("td", {}, (l.timestamp || "").replace("T", " ").slice(0, 23)),
      h("td", {}, h("span.lvl", {}, l.level)),
      h("td", {}, l.task_run_id ? this.names.get(l.task_run_id) || l.task_run_id : "—"),
      h("td.msg", {}, l.message),
      h("td", {}, l.trace_id ? h("code", { title: `span ${l.span_id || ""}` }, l.trace_id.slice(0, 16) + "…") : "—"))));
    if (!rows.length) this.body.append(h("tr", {}, h("td", { colspan: 5 }, "No log lines.")));
  }
}

// -- Outputs, Metrics, History ---------------------------------------------------------------
function valueTree(value, ex) {
  if (typeof value === "string" && value.startsWith("actorflow://")) {
    const name = value.split("/").pop();
    return h("a.file", { href: `api/v1/executions/${encodeURIComponent(ex.id)}/file` + qs({ uri: value }), download: name }, "⬇ " + name);
  }
  if (Array.isArray(value)) {
    return h("ol.tree", { start: 0 }, value.map((v) => h("li", {}, valueTree(v, ex))));
  }
  if (value && typeof value === "object") {
    return h("ul.tree", {}, Object.entries(value).map(([k, v]) => h("li", {}, h("span.key", {}, k), ": ", valueTree(v, ex))));
  }
  return h("code", {}, JSON.stringify(value));
}

function outputs(ex) {
  const withOut = treeOrder(ex).filter((tr) => Object.keys(tr.outputs || {}).length);
  const groups = new Map();
  for (const tr of withOut) {
    if (!groups.has(tr.task_id)) groups.set(tr.task_id, []);
    groups.get(tr.task_id).push(tr);
  }
  return h("div", {},
    Object.keys(ex.outputs || {}).length ? h("section.outgroup", {}, h("h2", {}, "Flow outputs"), valueTree(ex.outputs, ex)) : null,
    withOut.length ? null : h("p.empty", {}, "No outputs."),
    [...groups.entries()].map(([task, trs]) => h("section.outgroup", { "data-task": task },
      h("h2", {}, task),
      trs.map((tr) => h("details", { open: true, "data-task-run": tr.id },
        h("summary", {}, tr.value !== null ? `value ${tr.value}` : (tr.iteration !== null ? `iteration ${tr.iteration}` : "outputs"), " ", badge(tr.state)),
        valueTree(tr.outputs, ex))))));
}

function metrics(ex) {
  const rows = ex.task_runs.flatMap((tr) => tr.metrics.map((m) => ({ tr, m })));
  if (!rows.length) return h("p.empty", {}, "No metrics.");
  return h("div.scroll", {}, h("table.list", {}, h("caption.sr-only", {}, "Metrics"),
    h("thead", {}, h("tr", {}, ["Task", "Name", "Kind", "Value", "Count", "Tags"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.map(({ tr, m }) => h("tr", {},
      h("td", {}, tr.task_id + (tr.value !== null ? ` [${tr.value}]` : "")),
      h("td", {}, m.name), h("td", {}, m.kind),
      h("td", {}, m.kind === "timer" ? fmtDuration(m.value) : String(m.value)),
      h("td", {}, String(m.count)),
      h("td", {}, Object.entries(m.tags || {}).map(([k, v]) => h("span.label", {}, `${k}: ${v}`))))))));
}

function historyTable(history, caption) {
  return h("table.list.hist", {}, h("caption", {}, caption),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "State"), h("th", { scope: "col" }, "Date (UTC)"))),
    h("tbody", {}, history.map(([state, date]) => h("tr", {}, h("td", {}, badge(state)), h("td", {}, fmtDate(date) + "." + String(Math.floor((date % 1) * 1000)).padStart(3, "0"))))));
}

function historyView(ex) {
  return h("div.histories", {},
    historyTable(ex.history, "Execution"),
    treeOrder(ex).map((tr) => historyTable(tr.history, tr.task_id + (tr.value !== null ? ` [${tr.value}]` : ""))));
}
