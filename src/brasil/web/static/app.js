// brasil web: the dashboard page. Plain JS, no library, nothing fetched but this server's API.
// Every text from the cluster goes through textContent or setAttribute (el() below): never
// innerHTML, so a job named <script>alert(1)</script> shows as text.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const state = {
  snap: null, selected: null, colour: "load", metric: "load1", range: 3600,
  charts: [], csrf: "", actions: false, workload: null, lastTail: 0,
};

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "on") { for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn); }
    else e.setAttribute(k, String(v));
  }
  for (const k of kids) if (k !== null && k !== undefined) e.append(k instanceof Node ? k : String(k));
  return e;
}
function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = String(text);
  return e;
}
function clear(e) { while (e.firstChild) e.removeChild(e.firstChild); return e; }
function src(id, path) {  // a figure's 9P file: shown, and on hover
  const a = document.getElementById(id);
  if (!a) return;
  a.textContent = path; a.title = "read it: brasil cat " + path;
}
function fmt(v, unit) {
  if (v === null || v === undefined) return "–";
  if (unit === "B" || unit === "B/s") {
    const u = ["", "K", "M", "G", "T"]; let i = 0;
    while (Math.abs(v) >= 1024 && i < u.length - 1) { v /= 1024; i++; }
    return v.toFixed(i ? 1 : 0) + " " + u[i] + unit;
  }
  if (unit === "%") return v.toFixed(1) + "%";
  return Math.abs(v) >= 100 ? v.toFixed(0) : (+v.toFixed(2)).toString();
}
function hhmm(t, span) {
  const d = new Date(t * 1000);
  const p = (n) => String(n).padStart(2, "0");
  return span > 86400 * 2 ? `${d.getMonth() + 1}/${d.getDate()}` :
    span > 3600 * 3 ? `${p(d.getHours())}:${p(d.getMinutes())}` :
    `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

async function api(path, opts) {
  const r = await fetch(path, Object.assign({ credentials: "same-origin" }, opts || {}));
  const body = await r.json().catch(() => ({ error: r.statusText }));
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}
function showError(msg) {
  const e = document.getElementById("error");
  e.hidden = !msg; e.textContent = msg || "";
}

// ---- the tree --------------------------------------------------------------------------

function colourOf(n) {
  if (n.state !== "up") return "#999";
  let x;
  if (state.colour === "free") x = n.slots ? 1 - (n.free || 0) / n.slots : 0;
  else x = Math.min(1, (n.load || 0) / Math.max(1, n.cores || 1));
  return `hsl(${Math.round(120 * (1 - x))}, 55%, 38%)`;
}
function nodeLabel(n) {
  if (n.state !== "up") return n.state;
  return state.colour === "free" ? `${n.free ?? "?"}/${n.slots ?? "?"}` : fmt(n.load);
}

function paintTile(tile, n) {  // what changes from one snapshot to the next, in place
  tile.style.background = colourOf(n);
  tile.title = `${n.name} (${n.state}): load ${fmt(n.load)}, free ${n.free}/${n.slots} slots — ${n.path}/local/status`;
  tile.lastChild.textContent = nodeLabel(n);
}

function renderTree() {
  const snap = state.snap;
  // The same nodes in the same places: the tiles are repainted, not replaced, so that a click
  // in progress is not lost to a snapshot.
  const shape = JSON.stringify([state.selected, snap.nodes.map((n) => [n.name, n.parent, n.state, n.set])]);
  if (shape === state.treeShape) {
    for (const n of snap.nodes) {
      const tile = state.tiles[n.name];
      if (tile) paintTile(tile, n);
    }
    renderSets();
    return;
  }
  state.treeShape = shape;
  state.tiles = {};
  const box = clear(document.getElementById("tree"));
  const kids = {};
  const byName = {};
  for (const n of snap.nodes) { byName[n.name] = n; }
  for (const n of snap.nodes) {
    const p = n.name === snap.root ? "" : (byName[n.parent] ? n.parent : snap.root);
    (kids[p] = kids[p] || []).push(n);
  }
  const build = (n, depth) => {
    const tile = el("span", {
      class: "node " + n.state + (state.selected === n.name ? " selected" : ""),
      "data-node": n.name, "data-state": n.state,
      on: { click: (ev) => { ev.stopPropagation(); select(n.name); } },
    }, n.name, el("span", { class: "fig" }));
    paintTile(tile, n);
    state.tiles[n.name] = tile;
    const li = el("li", {}, tile);
    const ch = (kids[n.name] || []).sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true }));
    if (ch.length) {
      if (n.set) li.append(el("span", { class: "folded", title: "the subtree as a node set" }, n.set));
      const leaves = ch.every((c) => !(kids[c.name] || []).length);
      if (leaves && ch.length > 3) {  // a row of tiles: 64 leaves stay at a glance
        li.append(el("div", { class: "leaves" }, ...ch.map((c) => build(c, depth + 1).firstChild)));
      } else if (depth < 12) li.append(el("ul", {}, ...ch.map((c) => build(c, depth + 1))));
    }
    return li;
  };
  const roots = kids[""] || [];
  box.append(el("ul", {}, ...roots.map((n) => build(n, 0))));
  renderSets();
}

function renderSets() {
  const snap = state.snap, sets = clear(document.getElementById("sets"));
  sets.append(el("div", { title: snap.sources.nodes }, `up (${snap.count.up}): ${snap.up || "–"}`));
  if (snap.count.lost) sets.append(el("div", { class: "state-lost", "data-lost": snap.lost }, `lost (${snap.count.lost}): ${snap.lost}`));
}

function select(name) {
  state.selected = name === state.snap.root ? null : name;
  renderTree(); renderScope(); makeCharts();
}

// ---- the selected scope: whole tree, a subtree, a node ----------------------------------

function scopeNode() { return state.selected || state.snap.root; }
function renderScope() {
  const snap = state.snap, name = scopeNode();
  const n = snap.nodes.find((x) => x.name === name) || {};
  const crumbs = clear(document.getElementById("crumbs"));
  const chain = [];
  for (let x = n; x && x.name; x = snap.nodes.find((y) => y.name === x.parent)) {
    chain.unshift(x.name);
    if (x.name === snap.root || chain.length > 64) break;
  }
  chain.forEach((c, i) => {
    if (i) crumbs.append(" › ");
    crumbs.append(el("a", { on: { click: () => select(c) } }, c === snap.root ? `${c} (whole tree)` : c));
  });
  const title = document.getElementById("scope-title");
  title.textContent = name === snap.root ? `Whole tree below ${name}` : n.set ? `Subtree below ${name}` : `Node ${name}`;
  document.getElementById("scope-set").textContent = n.set ? `subtree: ${n.set}` : "";
  const t = clear(document.getElementById("latest"));
  const m = n.metrics || {};
  const summary = name === snap.root ? snap.summary : null;
  t.append(el("tr", {}, el("th", {}, "metric"), el("th", {}, name),
    ...(summary ? [el("th", {}, "tree mean"), el("th", {}, "tree min"), el("th", {}, "tree max"), el("th", {}, "tree sum")] : [])));
  for (const k of snap.metrics) {
    const u = snap.units[k], s = summary && summary[k];
    t.append(el("tr", {}, el("td", {}, k), el("td", { class: "num", title: snap.sources.metrics }, fmt(m[k], u)),
      ...(s ? [el("td", { class: "num", title: snap.sources.summary }, fmt(s.mean, u)),
        el("td", { class: "num", title: `${snap.sources.summary} (on ${s.min_node})` }, fmt(s.min, u)),
        el("td", { class: "num", title: `${snap.sources.summary} (on ${s.max_node})` }, fmt(s.max, u)),
        el("td", { class: "num", title: snap.sources.summary }, fmt(s.sum, u))] : [])));
  }
  src("latest-src", summary ? `${snap.sources.metrics} · ${snap.sources.summary}` : snap.sources.metrics);
}

// ---- charts: a polyline per series over the history, the tail fetched as it grows ----------

function makeCharts() {
  const box = clear(document.getElementById("charts"));
  const name = scopeNode(), n = state.snap.nodes.find((x) => x.name === name) || {};
  const series = [];
  if (name === state.snap.root || n.set) series.push(["subtree", name === state.snap.root ? "whole tree" : `subtree of ${name}`]);
  series.push(["self", `${name} alone`]);
  state.charts = series.map(([s, label]) => {
    const c = { node: name, series: s, metric: state.metric, range: state.range, points: [], label };
    c.title = el("div", { class: "title" }, `${state.metric} — ${label}`);
    c.source = el("a", { class: "src" });
    c.title.append(c.source);
    c.svg = svg("svg", { class: "chart", viewBox: "0 0 600 170", preserveAspectRatio: "none", "data-series": s, "data-points": 0 });
    box.append(el("div", { class: "chart-box" }, c.title, c.svg));
    load(c, false);
    return c;
  });
}

async function load(c, tail) {
  let q = `/api/history?node=${encodeURIComponent(c.node)}&series=${c.series}&metric=${encodeURIComponent(c.metric)}&range=${c.range}`;
  const last = c.points.length ? c.points[c.points.length - 1][0] : null;
  if (tail && last !== null) q += `&since=${last}`;
  try {
    const h = await api(q);
    if (!state.charts.includes(c)) return;
    if (tail && last !== null && h.points.length) {
      const from = h.points[0][0];
      c.points = c.points.filter((p) => p[0] < from).concat(h.points);
      const oldest = Date.now() / 1000 - c.range;
      c.points = c.points.filter((p) => p[0] >= oldest - h.step);
    } else if (!tail || last === null) c.points = h.points;
    c.unit = h.unit; c.step = h.step;
    c.source.textContent = `${h.path} ← "${h.request}"`;
    c.source.title = `write "${h.request}" to ${h.path}, then read it`;
    draw(c);
  } catch (e) { c.source.textContent = "error: " + e.message; }
}

function draw(c) {
  const s = clear(c.svg), W = 600, H = 170, L = 58, R = 8, T = 8, B = 20;
  s.setAttribute("data-points", c.points.length);
  s.setAttribute("data-last", c.points.length ? c.points[c.points.length - 1][0] : "");
  s.append(svg("title", {}, c.source.title || ""));
  const now = Date.now() / 1000, t0 = now - c.range, t1 = now;
  let lo = Infinity, hi = -Infinity;
  for (const p of c.points) { lo = Math.min(lo, p[2] ?? p[1]); hi = Math.max(hi, p[3] ?? p[1]); }
  if (!isFinite(lo)) { lo = 0; hi = 1; }
  if (lo > 0 && lo < hi * 0.5) lo = 0;
  if (hi === lo) { hi = lo + (Math.abs(lo) || 1); }
  const x = (t) => L + (W - L - R) * (t - t0) / (t1 - t0);
  const y = (v) => T + (H - T - B) * (1 - (v - lo) / (hi - lo));
  for (let i = 0; i <= 4; i++) {
    const v = lo + (hi - lo) * i / 4;
    s.append(svg("line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
    s.append(svg("text", { x: L - 4, y: y(v) + 3, "text-anchor": "end" }, fmt(v, c.unit)));
  }
  for (let i = 0; i <= 4; i++) {
    const t = t0 + (t1 - t0) * i / 4;
    s.append(svg("text", { x: x(t), y: H - 5, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle" }, hhmm(t, c.range)));
  }
  s.append(svg("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }));
  s.append(svg("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
  if (!c.points.length) {
    s.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no points yet"));
    return;
  }
  const line = (i, cls) => s.append(svg("polyline", { class: cls, points: c.points.filter((p) => p[i] !== null).map((p) => `${x(p[0]).toFixed(1)},${y(p[i]).toFixed(1)}`).join(" ") }));
  if (c.series === "subtree") { line(3, "max"); line(2, "min"); }
  line(1, "mean");
}

function tails() {
  const now = Date.now();
  if (now - state.lastTail < 2000) return;
  state.lastTail = now;
  for (const c of state.charts) load(c, true);
}

// ---- sessions and batch ------------------------------------------------------------------

function unchanged(key, value) {  // a part drawn again only when it changed (clicks survive)
  const text = JSON.stringify(value);
  if (state.drawn && state.drawn[key] === text) return true;
  (state.drawn = state.drawn || {})[key] = text;
  return false;
}

function renderSessions() {
  if (unchanged("sessions", [state.snap.sessions, state.actions])) return;
  const snap = state.snap, t = clear(document.getElementById("sessions"));
  src("sessions-src", snap.sources.sessions);
  t.append(el("tr", {}, ...["node", "id", "user", "command", "ranks", "where", "state", ""].map((h) => el("th", {}, h))));
  const rows = snap.sessions.rows || [];
  if (!rows.length) t.append(el("tr", {}, el("td", { colspan: 8, class: "muted" }, snap.sessions.error || "no sessions")));
  for (const r of rows) {
    const ranks = r.ranks || [];
    const kill = state.actions ? el("button", { on: { click: () => act("kill", { node: r.node, id: r.id }) } }, "kill") : "";
    t.append(el("tr", { title: r.path + "/status", "data-session": `${r.node}/${r.id}` },
      el("td", {}, r.node), el("td", {}, r.id), el("td", {}, r.user), el("td", { class: "cmd" }, r.command),
      el("td", { class: "num" }, ranks.length || "–"), el("td", {}, r.where || "–"),
      el("td", { class: "state-" + r.state }, r.state), el("td", {}, kill)));
  }
  if (snap.sessions.cut) t.append(el("tr", {}, el("td", { colspan: 8, class: "muted" }, "(more sessions than shown)")));
}

function renderBatch() {
  if (unchanged("batch", [state.snap.batch, state.actions])) return;
  const snap = state.snap, b = snap.batch || {};
  src("batch-src", snap.sources.batch);
  const sm = b.summary || {};
  document.getElementById("batch-summary").textContent = b.error ? `no scheduler here: ${b.error}` :
    Object.entries(sm).map(([k, v]) => `${k} ${v}`).join(" · ");
  const box = clear(document.getElementById("workloads"));
  for (const w of b.workloads || []) {
    const st = w.states, total = w.total || 1;
    const bar = el("div", { class: "bar", title: w.path });
    for (const k of ["done", "running", "failed", "cancelled"]) {
      const s = el("span", { class: k }); s.style.width = `${100 * (st[k] || 0) / total}%`; bar.append(s);
    }
    const ended = (st.done || 0) + (st.failed || 0) + (st.cancelled || 0);
    const head = el("div", { class: "head" },
      el("span", { class: "tag" }, w.tag), bar, el("span", {}, `${ended}/${w.total} ended`),
      el("span", { class: "muted" }, Object.entries(st).map(([k, v]) => `${k} ${v}`).join(", ")),
      el("button", { on: { click: () => { state.workload = w.tag; gantt(); } } }, "Gantt"),
      state.actions ? el("button", { on: { click: () => act("cancel", { tag: w.tag }) } }, "cancel") : null,
      el("a", { class: "src" }, w.path));
    const div = el("div", { class: "workload", "data-tag": w.tag }, head);
    if (w.failures.length) {
      const t = el("table", { class: "grid" }, el("tr", {}, ...["job", "name", "state", "command", "reason", "worker"].map((h) => el("th", {}, h))));
      for (const f of w.failures) {
        t.append(el("tr", { class: "failure", title: `/csrv/local/batch/job/${f.id}/status` },
          el("td", {}, f.id), el("td", {}, f.name || "–"), el("td", { class: "state-failed" }, f.state),
          el("td", { class: "cmd" }, f.cmd), el("td", {}, f.reason), el("td", {}, f.worker || "–")));
      }
      div.append(t);
    }
    box.append(div);
  }
  if (!(b.workloads || []).length && !b.error) box.append(el("div", { class: "muted" }, "no workloads"));
}

async function gantt() {
  const box = document.getElementById("gantt-box");
  if (!state.workload) return;
  let w;
  try { w = await api(`/api/workload?tag=${encodeURIComponent(state.workload)}`); }
  catch (e) { clear(box).append(el("div", { class: "error" }, e.message)); return; }
  clear(box);
  box.append(el("h3", {}, `Gantt of ${w.tag}: makespan ${w.makespan.toFixed(2)} s`, el("a", { class: "src" }, w.path)));
  const rows = [...new Set(w.runs.map((r) => r.row))].sort();
  const W = Math.max(400, box.clientWidth || 900), L = 150, RH = 16, H = rows.length * RH + 24;
  const t0 = w.first, t1 = Math.max(t0 + 0.001, ...w.runs.map((r) => r.end));
  const s = svg("svg", { class: "gantt", viewBox: `0 0 ${W} ${H}`, width: W, height: H });
  s.append(svg("title", {}, w.path));
  rows.forEach((r, i) => s.append(svg("text", { x: 4, y: i * RH + 12 }, r)));
  for (const r of w.runs) {
    const i = rows.indexOf(r.row), x = L + (W - L - 10) * (r.start - t0) / (t1 - t0);
    const wd = Math.max(1, (W - L - 10) * (r.end - r.start) / (t1 - t0));
    const rect = svg("rect", { class: r.outcome, x, y: i * RH + 2, width: wd, height: RH - 4 });
    rect.append(svg("title", {}, `job ${r.job} on ${r.row}: ${r.outcome}${r.redundant ? " (redundant)" : ""}, ${(r.end - r.start).toFixed(3)} s`));
    s.append(rect);
  }
  s.append(svg("text", { x: L, y: H - 4 }, "0 s"));
  s.append(svg("text", { x: W - 10, y: H - 4, "text-anchor": "end" }, `${(t1 - t0).toFixed(2)} s`));
  box.append(s);
}

async function act(what, body) {
  if (!state.actions) return;
  if (!confirm(`${what} ${JSON.stringify(body)}?`)) return;
  try {
    await api(`/api/${what}`, { method: "POST", headers: { "Content-Type": "application/json", "X-CSRF-Token": state.csrf }, body: JSON.stringify(body) });
  } catch (e) { showError(`${what}: ${e.message}`); }
}

// ---- the live feed ---------------------------------------------------------------------

function apply(snap) {
  const first = !state.snap;
  state.snap = snap;
  showError(snap.error || "");
  document.getElementById("summary").textContent =
    `${snap.root}: ${snap.count.up} nodes up` + (snap.count.lost ? `, ${snap.count.lost} lost` : "");
  src("tree-src", snap.sources.nodes);
  if (state.selected && !snap.nodes.some((n) => n.name === state.selected)) state.selected = null;
  renderTree(); renderScope(); renderSessions(); renderBatch();
  if (first && window.performance && performance.mark) performance.mark("brasil-first-tree");
  if (first) {
    const sel = document.getElementById("metric");
    for (const m of snap.metrics) sel.append(el("option", { value: m, selected: m === state.metric }, m));
    makeCharts();
  } else tails();
  if (state.workload && (snap.t - (state.ganttAt || 0)) > 2) { state.ganttAt = snap.t; gantt(); }
}

function live() {
  const badge = document.getElementById("live");
  const es = new EventSource("/api/events");
  es.addEventListener("snapshot", (ev) => {
    badge.textContent = "live"; badge.className = "badge on";
    apply(JSON.parse(ev.data));
  });
  es.onerror = () => { badge.textContent = "reconnecting"; badge.className = "badge off"; };
}

async function start() {
  document.getElementById("colour").addEventListener("change", (e) => { state.colour = e.target.value; state.treeShape = null; renderTree(); });
  document.getElementById("metric").addEventListener("change", (e) => { state.metric = e.target.value; makeCharts(); });
  document.getElementById("range").addEventListener("change", (e) => { state.range = +e.target.value; makeCharts(); });
  try {
    const s = await api("/api/session");
    state.actions = s.actions; state.csrf = s.csrf;
    apply(await api("/api/snapshot"));
  } catch (e) { showError(e.message); }
  live();
}
document.addEventListener("DOMContentLoaded", start);
