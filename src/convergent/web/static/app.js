// The live web view of a convergent agent: the graph coloured by each vertex's state,
// kept up to date by the server-sent events of /api/events. Read-only.
"use strict";

const view = {
  vertices: new Map(), // id -> {state, outcome, repairs, error}
  selected: null,
  generation: 0,
  source: null,
};

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function api(path, asText) {
  const response = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  if (response.status === 401) {
    document.getElementById("login").hidden = false;
    throw new Error("token needed");
  }
  if (!response.ok) {
    let text = response.statusText;
    try { text = (await response.json()).error || text; } catch (e) { /* not JSON */ }
    throw new Error(text);
  }
  return asText ? response.text() : response.json();
}

function nodeOf(id) {
  const node = document.getElementById(id);
  return node && node.closest && node.closest("#graph") ? node : null;
}

function paint(id) {
  const info = view.vertices.get(id);
  if (!info) return;
  const node = nodeOf(id);
  for (const target of [node, document.querySelector(`#list li[data-id="${CSS.escape(id)}"]`)]) {
    if (!target) continue;
    target.setAttribute("data-state", info.state);
    target.setAttribute("data-outcome", info.outcome || "none");
    target.setAttribute("data-repairs", String(info.repairs || 0));
  }
  counts();
}

function counts() {
  const by = {};
  for (const info of view.vertices.values()) by[info.state] = (by[info.state] || 0) + 1;
  const text = Object.entries(by).sort().map(([s, n]) => `${s}: ${n}`).join(", ");
  document.getElementById("counts").textContent = `${view.vertices.size} resources (${text})`;
}

function overall(converged) {
  const badge = document.getElementById("overall");
  let failed = 0;
  for (const info of view.vertices.values()) {
    if (info.state === "failed" || info.state === "blocked") failed += 1;
  }
  if (converged && failed) {
    badge.dataset.converged = "failed";
    badge.textContent = `settled, ${failed} failed or blocked`;
  } else {
    badge.dataset.converged = converged ? "true" : "false";
    badge.textContent = converged ? "converged" : "converging...";
  }
}

async function loadGraph() {
  const box = document.getElementById("graph");
  let text;
  try {
    text = await api("/api/graph.svg", true);
  } catch (error) {
    box.replaceChildren(el("p", { class: "note" }, `no drawing of the graph: ${error.message}`));
    return;
  }
  const parsed = new DOMParser().parseFromString(text, "image/svg+xml");
  const svg = document.importNode(parsed.documentElement, true);
  for (const bad of svg.querySelectorAll("script, foreignObject")) bad.remove();
  svg.removeAttribute("width");
  svg.removeAttribute("height");
  box.replaceChildren(svg);
  for (const node of svg.querySelectorAll("g.node")) {
    node.addEventListener("click", () => select(node.id));
  }
  for (const id of view.vertices.keys()) paint(id);
  if (view.selected) mark(view.selected);
}

async function loadVertices() {
  const data = await api("/api/vertices");
  document.getElementById("host").textContent = data.host + (data.noop ? " (noop)" : "");
  view.generation = data.generation;
  const list = document.getElementById("list");
  list.replaceChildren();
  for (const v of data.vertices) {
    view.vertices.set(v.id, { state: v.state, outcome: v.outcome, repairs: v.repairs, error: v.error });
    const item = el("li", { "data-id": v.id }, el("span", { class: "dot" }, " "), v.id);
    if (v.origin) item.append(el("span", { class: "origin" }, ` from ${v.origin}`));
    if (v.exported) item.append(el("span", { class: "origin" }, " exported"));
    item.addEventListener("click", () => select(v.id));
    list.append(item);
  }
  showWorld(data);
  overall(data.converged);
  return data;
}

function showWorld(data) {
  const section = document.getElementById("world-section");
  section.hidden = !data.hosts.length && !data.exports.length;
  const hosts = document.getElementById("hosts");
  hosts.replaceChildren();
  for (const h of data.hosts) {
    const state = !h.alive ? "gone" : h.converged ? "converged" : "alive, not converged";
    hosts.append(el("li", { "data-host": h.name }, `${h.name}: ${state}, ${h.exports} exported`));
  }
  document.getElementById("exports").textContent = data.exports.length
    ? `This host exports: ${data.exports.join(", ")}`
    : "";
}

function mark(id) {
  for (const node of document.querySelectorAll("#graph g.node.selected")) node.classList.remove("selected");
  const node = nodeOf(id);
  if (node) node.classList.add("selected");
}

function table(params) {
  const rows = Object.entries(params || {});
  if (!rows.length) return el("p", { class: "note" }, "all parameters at their defaults");
  const body = el("tbody");
  for (const [key, value] of rows) {
    const shown = typeof value === "string" ? value : JSON.stringify(value, null, 1);
    body.append(el("tr", {}, el("td", {}, key), el("td", {}, shown)));
  }
  return el("table", {}, body);
}

function time(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString();
}

async function select(id) {
  view.selected = id;
  mark(id);
  const detail = document.getElementById("detail");
  let v;
  try {
    v = await api(`/api/vertices/${encodeURIComponent(id)}`);
  } catch (error) {
    detail.replaceChildren(el("p", { class: "note" }, `${id}: ${error.message}`));
    return;
  }
  if (view.selected !== id) return;
  const info = view.vertices.get(id) || v;
  const parts = [
    el("h2", {}, v.id),
    el("p", {},
      el("span", { class: "badge", "data-state": info.state, id: "detail-state" }, info.state),
      el("span", { id: "detail-outcome" }, info.outcome ? `last: ${info.outcome}` : ""),
      ` - repairs in this run: ${info.repairs}`),
  ];
  if (info.error) parts.push(el("pre", { class: "error", id: "detail-error" }, info.error));
  if (v.members) {
    for (const m of v.members) parts.push(el("h3", {}, m.id), table(m.params));
  } else {
    parts.push(el("h3", {}, "Parameters"), table(v.params));
  }
  if (v.origin) parts.push(el("p", {}, `collected: exported by host ${v.origin}`));
  if (v.exported) parts.push(el("p", {}, "exported by this host"));
  if (v.upstream.length) parts.push(el("p", {}, "after: ", v.upstream.join(", ")));
  if (v.downstream.length) parts.push(el("p", {}, "before: ", v.downstream.join(", ")));
  const events = el("ol", { id: "detail-events", reversed: "" });
  for (const e of v.events.slice().reverse()) events.append(eventItem(e));
  parts.push(el("h3", {}, "Last events"), events);
  detail.replaceChildren(...parts);
}

function eventItem(e) {
  const extra = e.seconds !== undefined ? ` (${e.seconds.toFixed(3)} s)` : "";
  return el("li", { class: `outcome-${e.outcome}` }, `${time(e.time)} ${e.outcome}: ${e.text}${extra}`);
}

function onState(data) {
  view.vertices.set(data.id, { state: data.state, outcome: data.outcome, repairs: data.repairs, error: data.error });
  paint(data.id);
  if (view.selected === data.id) {
    const badge = document.getElementById("detail-state");
    if (badge) { badge.dataset.state = data.state; badge.textContent = data.state; }
    const outcome = document.getElementById("detail-outcome");
    if (outcome) outcome.textContent = data.outcome ? `last: ${data.outcome}` : "";
  }
  overall(data.converged);
}

function connect() {
  if (view.source) view.source.close();
  const source = new EventSource("/api/events");
  view.source = source;
  source.addEventListener("snapshot", async (message) => {
    const data = JSON.parse(message.data);
    if (data.generation !== view.generation) {
      await loadVertices();
      await loadGraph();
    }
    for (const [id, info] of Object.entries(data.vertices)) view.vertices.set(id, info);
    for (const id of view.vertices.keys()) paint(id);
    overall(data.converged);
  });
  source.addEventListener("state", (message) => onState(JSON.parse(message.data)));
  source.addEventListener("event", (message) => {
    const data = JSON.parse(message.data);
    if (view.selected === data.id) {
      const list = document.getElementById("detail-events");
      if (list) list.prepend(eventItem(data));
    }
  });
  source.addEventListener("graph", async () => {
    await loadVertices();
    await loadGraph();
  });
  source.addEventListener("hosts", (message) => showWorld(JSON.parse(message.data)));
  source.addEventListener("converged", async () => {
    overall(true);
    showWorld(await api("/api/hosts"));
  });
  source.onerror = () => {
    document.getElementById("overall").textContent = "reconnecting...";
  };
}

function login() {
  const form = document.getElementById("login");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const token = document.getElementById("token").value.trim();
    document.cookie = `convergent_token=${encodeURIComponent(token)}; path=/; SameSite=Strict`;
    window.location.reload();
  });
}

async function main() {
  login();
  try {
    await loadVertices();
  } catch (error) {
    document.getElementById("overall").textContent = error.message;
    return;
  }
  await loadGraph();
  connect();
}

main();
