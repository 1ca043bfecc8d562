// The page's router and the Executions and Flows pages.
import {
  api, badge, clear, errorBox, execLink, fmtDate, fmtDuration, h, problemText, qs, stream, toast,
} from "./util.js";
import { executionPage } from "./execution.js";
import { formData, inputField } from "./forms.js";

const STATES = ["CREATED", "QUEUED", "RUNNING", "PAUSED", "RETRYING", "SUCCESS", "WARNING",
  "FAILED", "KILLING", "KILLED", "CANCELLED", "SKIPPED", "RESTARTED", "RETRIED"];
const PAGE = 25;

// Whatever a page opened (streams, timers) is closed when the route changes.
let cleanups = [];
export function onLeave(fn) { cleanups.push(fn); }

async function route() {
  cleanups.forEach((fn) => { try { fn(); } catch { /* already closed */ } });
  cleanups = [];
  const main = document.getElementById("main");
  const hash = location.hash.replace(/^#\/?/, "") || "executions";
  const [path, query = ""] = hash.split("?");
  const parts = path.split("/").map(decodeURIComponent);
  const params = new URLSearchParams(query);
  document.querySelectorAll("[data-nav]").forEach((a) => {
    a.toggleAttribute("aria-current", a.dataset.nav === parts[0]);
  });
  try {
    if (parts[0] === "executions" && parts[1]) await executionPage(main, parts[1], params, onLeave);
    else if (parts[0] === "flows" && parts[2]) await flowPage(main, parts[1], parts[2], params);
    else if (parts[0] === "flows") await flowsPage(main);
    else await executionsPage(main, params);
  } catch (err) {
    clear(main, h("h1", {}, "Something went wrong"), errorBox(err));
  }
}

// -- executions list ----------------------------------------------------------------------
function executionRow(ex) {
  const labels = Object.entries(ex.labels || {}).map(([k, v]) => h("span.label", {}, `${k}: ${v}`));
  const trigger = ex.trigger ? `${ex.trigger.type || "trigger"} ${ex.trigger.id || ""}` : "manual";
  return h("tr", { "data-id": ex.id, "data-state": ex.state, "data-flow": ex.flow_id },
    h("td.id", {}, execLink(ex.id), ex.parent_execution_id ? h("span.muted", {}, " (subflow)") : null),
    h("td", {}, badge(ex.state)),
    h("td", {}, h("a", { href: `#/flows/${encodeURIComponent(ex.namespace)}/${encodeURIComponent(ex.flow_id)}` }, ex.flow_id)),
    h("td", {}, ex.namespace),
    h("td", {}, labels),
    h("td", {}, fmtDate(ex.history[0][1])),
    h("td", {}, fmtDuration(ex.duration)),
    h("td", {}, trigger));
}

export function executionsTable(rows, caption) {
  const body = h("tbody", {}, rows.map(executionRow));
  const table = h("table.list", {},
    h("caption", { class: "sr-only" }, caption),
    h("thead", {}, h("tr", {}, ["Id", "State", "Flow", "Namespace", "Labels", "Start (UTC)", "Duration", "Trigger"].map((c) => h("th", { scope: "col" }, c)))),
    body);
  return { table: h("div.scroll", {}, table), body };
}

async function executionsPage(main, params) {
  const filters = {
    namespace: params.get("namespace") || "", flowId: params.get("flowId") || "",
    state: params.getAll("state"),
  };
  const cursor = params.get("cursor") || "";
  const search = h("input#search", { type: "search", placeholder: "execution id", "aria-label": "Search by execution id" });
  const ns = h("input#f-namespace", { value: filters.namespace, name: "namespace" });
  const flow = h("input#f-flow", { value: filters.flowId, name: "flowId" });
  const state = h("select#f-state", { name: "state" },
    h("option", { value: "" }, "any state"),
    STATES.map((s) => h("option", { value: s, selected: filters.state.includes(s) }, s)));
  const apply = (e) => {
    e.preventDefault();
    location.hash = "#/executions" + qs({ namespace: ns.value.trim(), flowId: flow.value.trim(), state: state.value ? [state.value] : [] });
  };
  const find = async (e) => {
    e.preventDefault();
    const id = search.value.trim();
    if (!id) return;
    try {
      await api(`executions/${encodeURIComponent(id)}`);
      location.hash = `#/executions/${encodeURIComponent(id)}`;
    } catch (err) {
      clear(msg, errorBox(err));
    }
  };
  const msg = h("div");
  const data = await api("executions" + qs({ ...filters, limit: PAGE, cursor }));
  const { table, body } = executionsTable(data.results, "Executions");
  const pager = h("nav.pager", { "aria-label": "Pages" },
    cursor ? h("a", { href: "#/executions" + qs(filters) }, "⇤ Newest") : null,
    data.next ? h("a", { href: "#/executions" + qs({ ...filters, cursor: data.next }), rel: "next" }, "Older →") : null);
  const live = h("span.live", { "aria-live": "off" }, cursor ? "paused while paging" : "● live");
  clear(main,
    h("div.head", {}, h("h1", {}, "Executions"), live),
    h("form.filters", { onsubmit: find, role: "search" },
      h("label", { for: "search" }, "Id"), search, h("button", { type: "submit" }, "Open")),
    h("form.filters", { onsubmit: apply, "aria-label": "Filters" },
      h("label", { for: "f-namespace" }, "Namespace"), ns,
      h("label", { for: "f-flow" }, "Flow"), flow,
      h("label", { for: "f-state" }, "State"), state,
      h("button", { type: "submit" }, "Filter")),
    msg,
    data.results.length ? table : h("p.empty", {}, "No executions match."),
    pager);
  if (cursor) return; // older pages stay still; the first page is live
  const es = stream("executions/events" + qs({ ...filters, limit: PAGE }), {
    execution: (ex) => {
      const row = executionRow(ex);
      const old = body.querySelector(`tr[data-id="${CSS.escape(ex.id)}"]`);
      if (old) old.replaceWith(row);
      else {
        if (!body.isConnected) main.querySelector(".empty")?.replaceWith(table);
        body.prepend(row);
        while (body.children.length > PAGE) body.lastElementChild.remove();
      }
    },
  });
  es.onerror = () => { live.textContent = "○ reconnecting"; };
  es.onopen = () => { live.textContent = "● live"; };
  onLeave(() => es.close());
}

// -- flows --------------------------------------------------------------------------------
async function flowsPage(main) {
  const data = await api("flows");
  const byNs = new Map();
  for (const f of data.results) {
    if (!byNs.has(f.namespace)) byNs.set(f.namespace, []);
    byNs.get(f.namespace).push(f);
  }
  clear(main, h("h1", {}, "Flows"),
    data.results.length ? null : h("p.empty", {}, "No flows deployed."),
    [...byNs.entries()].sort().map(([ns, flows]) => h("section", {},
      h("h2", {}, ns),
      h("ul.cards", {}, flows.map((f) => h("li", {},
        h("a", { href: `#/flows/${encodeURIComponent(ns)}/${encodeURIComponent(f.id)}` }, f.id),
        h("span.muted", {}, ` rev ${f.revision}`),
        f.description ? h("p", {}, f.description) : null,
        f.triggers.length ? h("p.muted", {}, "triggers: " + f.triggers.map((t) => t.type).join(", ")) : null))))));
}

async function flowPage(main, ns, id) {
  const flow = await api(`flows/${encodeURIComponent(ns)}/${encodeURIComponent(id)}`);
  let problems = [];
  if (flow.source) {
    const res = await fetch("api/v1/flows/validate", { method: "POST", body: flow.source });
    if (res.ok) problems = (await res.json()).problems || [];
  }
  const runMsg = h("div");
  const form = h("form.run", {
    "aria-label": "Run this flow",
    onsubmit: async (e) => {
      e.preventDefault();
      clear(runMsg);
      try {
        const ex = await api(`executions/${encodeURIComponent(ns)}/${encodeURIComponent(id)}`, { method: "POST", form: formData(form) });
        toast(`Execution ${ex.id} started`);
        location.hash = `#/executions/${encodeURIComponent(ex.id)}`;
      } catch (err) { clear(runMsg, errorBox(err)); }
    },
  }, flow.inputs.map((i) => inputField(i, "in")), h("button.primary", { type: "submit" }, "Run"), runMsg);
  const data = await api("executions" + qs({ namespace: ns, flowId: id, limit: 10 }));
  clear(main,
    h("div.head", {}, h("h1", {}, `${ns}.${id}`), h("span.muted", {}, `revision ${flow.revision}`)),
    flow.description ? h("p", {}, flow.description) : null,
    h("div.cols", {},
      h("section", {}, h("h2", {}, "Run"), flow.inputs.length ? null : h("p.muted", {}, "No inputs."), form),
      h("section", {}, h("h2", {}, "Triggers"),
        flow.triggers.length ? await triggersView(ns, id, flow.triggers) : h("p.muted", {}, "None."))),
    h("section", {}, h("h2", {}, "Source"),
      flow.source ? sourceEditor(flow, problems) : h("p.muted", {}, "A Python flow: no source.")),
    h("section", {}, h("h2", {}, "Recent executions"),
      data.results.length ? executionsTable(data.results, "Executions of this flow").table : h("p.muted", {}, "None yet."),
      h("a", { href: "#/executions" + qs({ namespace: ns, flowId: id }) }, "All executions of this flow →")));
}

/** The flow's triggers, each with an on/off switch (stored, so every server obeys it). */
async function triggersView(ns, id, declared) {
  let states = [];
  try {
    states = (await api("triggers" + qs({ namespace: ns }))).results.filter((t) => t.flowId === id);
  } catch { /* shown as declared; the switches say they cannot tell */ }
  const enabled = new Map(states.map((t) => [t.id, t.enabled]));
  const msg = h("div");
  const item = (t) => {
    const sid = `trigger-${t.id}`;
    const known = enabled.has(t.id);
    const text = h("span.switch-state", { id: sid + "-state" });
    const show = (on) => {
      text.textContent = on ? "On: fires" : "Off: does not fire";
      text.className = "switch-state " + (on ? "on" : "off");
    };
    const box = h("input", {
      type: "checkbox", role: "switch", id: sid, checked: known ? enabled.get(t.id) : !t.disabled,
      disabled: !known, "aria-describedby": sid + "-state",
      onchange: async () => {
        const want = box.checked;
        box.disabled = true;
        clear(msg);
        try {
          const res = await api(`triggers/${encodeURIComponent(ns)}/${encodeURIComponent(id)}/${encodeURIComponent(t.id)}`, { method: "PUT", json: { enabled: want } });
          box.checked = res.enabled;
          show(res.enabled);
          toast(`Trigger ${t.id} ${res.enabled ? "enabled" : "disabled"}`);
        } catch (err) {
          box.checked = !want;
          clear(msg, errorBox(err));
        } finally { box.disabled = false; }
      },
    });
    show(box.checked);
    return h("li.trigger", { "data-trigger": t.id },
      h("div", {}, h("strong", {}, t.id), ` ${t.type}`, t.cron ? ` — ${t.cron} (${t.timezone})` : "",
        t.disabled ? h("span.muted", {}, " (disabled in the flow file)") : null),
      h("div.switch", {}, box,
        h("label", { for: sid }, h("span.sr-only", {}, `${t.id} `), "enabled"), " ",
        known ? text : h("span.muted", {}, "state unknown")));
  };
  return h("div", {}, h("ul.triggers", {}, declared.map(item)), msg);
}

function problemsView(problems) {
  return problems.length
    ? h("div.error", { role: "alert" }, h("strong", {}, "Validation problems"),
      h("ul", {}, problems.map((p) => h("li", {}, problemText(p)))))
    : h("p.ok", {}, "✓ valid");
}

/** The flow's source, editable: Validate shows its problems, Deploy stores a new revision. */
function sourceEditor(flow, problems) {
  const status = h("div", {}, problemsView(problems));
  const text = h("textarea.source#flow-source", { rows: Math.min(30, flow.source.split("\n").length + 1), spellcheck: false }, flow.source);
  const send = async (path) => {
    clear(status);
    try {
      const res = await fetch("api/v1/" + path, { method: "POST", body: text.value, headers: { "Content-Type": "application/x-yaml" } });
      const body = await res.json();
      if (path === "flows/validate") clear(status, problemsView(body.problems || []));
      else if (!res.ok) clear(status, problemsView(body.problems || [{ message: body.message }]));
      else { toast(`Deployed revision ${body.revision}`); location.hash = `#/flows/${encodeURIComponent(body.namespace)}/${encodeURIComponent(body.id)}?r=${body.revision}`; }
    } catch (err) { clear(status, errorBox(err)); }
  };
  return h("div", {},
    status,
    h("label", { for: "flow-source" }, "Source (YAML)"),
    text,
    h("div.buttons", {},
      h("button", { type: "button", onclick: () => send("flows/validate") }, "Validate"),
      h("button.primary", { type: "button", onclick: () => send("flows") }, "Deploy")));
}

window.addEventListener("hashchange", route);
route();
