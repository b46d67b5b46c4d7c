// bot-coordinator dashboard. No framework, no build, no network beyond this coordinator.
// Everything shown is written with textContent (never innerHTML): a bot's error text or an
// audit reason that held markup is shown as text. The token lives in this tab's
// sessionStorage only, and goes out as a bearer header on the requests that change something.
"use strict";

const TOKEN_KEY = "bot-coordinator-token";
const POLL_MS = 2000;          // /status, when the coordinator answers
const MAX_BACKOFF_MS = 30000;  // the longest wait between tries when it does not
const SIDE_EVERY = 4;          // breakers, alerts, backups, reconciliation, audit: every 4th poll
const SERIES_MS = 10000;
const REQUEST_TIMEOUT_MS = 5000;

const ui = {
  status: null, sortKey: "name", sortDir: 1, filter: "", selected: null,
  failures: 0, downSince: null, polls: 0, rows: new Map(), seriesAt: 0,
};

const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

// -- the token -------------------------------------------------------------------------------

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

function showTokenState() {
  const set = token() !== "";
  $("token-form").hidden = set;
  $("token-state").hidden = !set;
}

// -- requests --------------------------------------------------------------------------------

async function api(path, { method = "GET", body, auth = false, bearer } = {}) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const credential = bearer !== undefined ? bearer : (auth ? token() : "");
  if (credential) headers["Authorization"] = "Bearer " + credential;
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
  try {
    const response = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store", credentials: "omit", signal: controller.signal,
    });
    let data = null;
    const type = response.headers.get("Content-Type") || "";
    if (type.includes("json")) data = await response.json();
    return { ok: response.ok, status: response.status, data };
  } finally {
    clearTimeout(timer);
  }
}

function why(result) {
  const error = result.data && result.data.error;
  return error ? `${error.message} (${result.status} ${error.code})` : `HTTP ${result.status}`;
}

function say(text, ok) {
  const box = $("messages");
  const line = el("div", `${new Date().toLocaleTimeString()}  ${text}`, "message " + (ok ? "ok" : "error"));
  box.prepend(line);
  while (box.children.length > 5) box.lastChild.remove();
}

async function act(label, path, body, options = {}) {
  try {
    const result = await api(path, { method: "POST", body, auth: true, ...options });
    if (result.ok) say(`${label}: done`, true);
    else say(`${label} refused: ${why(result)}`, false);
    await poll(true);
    return result;
  } catch (error) {
    say(`${label} failed: the coordinator did not answer (${error.name})`, false);
    return null;
  }
}

// -- formatting ------------------------------------------------------------------------------

function number(value, digits) {
  if (value === null || value === undefined) return "—";
  return Number(value).toLocaleString(undefined, { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}

function ago(iso) {
  if (!iso) return "—";
  const seconds = (Date.now() - Date.parse(iso)) / 1000;
  if (seconds < 0) return "now";
  if (seconds < 90) return `${seconds.toFixed(1)} s`;
  if (seconds < 5400) return `${(seconds / 60).toFixed(0)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function when(iso) { return iso ? new Date(iso).toLocaleString() : "—"; }

// -- the kill switch -------------------------------------------------------------------------

function renderKillSwitch(ks) {
  const box = $("kill-switch");
  box.classList.toggle("active", ks.active);
  box.classList.toggle("inactive", !ks.active);
  $("ks-state").textContent = ks.active ? "ACTIVE: trading stopped" : "inactive: trading allowed";
  $("ks-reason").textContent = ks.reason || "—";
  $("ks-by").textContent = ks.by ? (ks.trigger ? `${ks.by} (${ks.trigger})` : ks.by) : "—";
  $("ks-at").textContent = when(ks.at);
  $("ks-cooldown").textContent = ks.active && ks.cooldown_seconds_left > 0
    ? `${Math.ceil(ks.cooldown_seconds_left)} s (override needs the admin token until then)` : "—";
  const halt = ks.halt || {};
  $("ks-halt").textContent = !ks.active ? "—"
    : halt.in_progress ? `stopping: ${halt.bots_not_stopped} bot(s) not stopped, ${halt.orders_open} order(s) open`
    : halt.completed_at ? `complete at ${when(halt.completed_at)}` : "—";
}

function wireKillSwitch() {
  $("ks-activate").addEventListener("click", () => {
    $("ks-confirm").hidden = false;
    $("ks-reason-input").focus();
  });
  $("ks-cancel").addEventListener("click", () => { $("ks-confirm").hidden = true; });
  $("ks-confirm-button").addEventListener("click", async () => {
    const reason = $("ks-reason-input").value.trim();
    if (!reason) { say("Kill switch: say why (the reason is required)", false); $("ks-reason-input").focus(); return; }
    $("ks-confirm").hidden = true;
    $("ks-reason-input").value = "";
    await act("Kill switch activation", "/kill-switch", { action: "activate", reason });
  });
  $("ks-override").addEventListener("click", async () => {
    const reason = $("ks-override-reason").value.trim();
    if (!reason) { say("Override: say why trading may resume (the reason is required)", false); return; }
    await act("Override", "/kill-switch", { action: "override", reason });
  });
  $("ks-force").addEventListener("click", async () => {
    const reason = $("ks-override-reason").value.trim();
    const approver = $("ks-approver").value.trim();
    const admin = $("ks-admin-token").value.trim();
    if (!reason || !approver) { say("Force override: a reason and who approves are required", false); return; }
    await act("Force override", "/kill-switch",
      { action: "force_override", reason, approved_by: approver }, { bearer: admin });
    $("ks-admin-token").value = "";  // the admin token is never kept
  });
}

// -- bots ------------------------------------------------------------------------------------

const COLUMNS = [
  ["name", (b) => b.name], ["exchange", (b) => `${b.exchange} ${b.symbol}`],
  ["state", (b) => b.state], ["mode", (b) => b.mode], ["safe_mode", (b) => (b.safe_mode ? "yes" : "")],
  ["position", (b) => b.position.base], ["pnl", (b) => b.pnl.total], ["open_orders", (b) => b.open_orders],
  ["fills", (b) => b.fills], ["tick_age", (b) => (b.last_tick ? -Date.parse(b.last_tick) : -Infinity)],
  ["restarts", (b) => b.restarts], ["last_refusal", (b) => b.last_refusal || ""], ["error", (b) => b.error || ""],
];
const SORT_VALUE = Object.fromEntries(COLUMNS);

function matches(bot, filter) {
  if (!filter) return true;
  const text = [bot.name, bot.exchange, bot.symbol, bot.state, bot.mode, bot.strategy,
    bot.safe_mode ? "safe" : "", bot.error || "", bot.last_refusal || ""].join(" ").toLowerCase();
  return filter.split(/\s+/).every((word) => text.includes(word));
}

function newRow(name) {
  const row = document.createElement("tr");
  row.dataset.bot = name;
  const cells = {};
  for (const [key] of COLUMNS) {
    const td = el("td");
    if (["position", "pnl", "open_orders", "fills", "tick_age", "restarts"].includes(key)) td.className = "num";
    if (key === "last_refusal" || key === "error") td.className = "clip";
    cells[key] = td;
    row.append(td);
  }
  const link = el("span", name, "bot-link");
  link.dataset.action = "chart";
  cells.name.append(link);
  const actions = el("td");
  for (const [action, label] of [["start", "Start"], ["safe", "Safe start"], ["stop", "Stop"]]) {
    const button = el("button", label);
    button.type = "button";
    button.dataset.action = action;
    actions.append(button, " ");
  }
  row.append(actions);
  return { row, cells };
}

function fill(entry, bot) {
  const c = entry.cells;
  c.exchange.textContent = `${bot.exchange} ${bot.symbol}`;
  c.state.textContent = bot.state;
  c.state.className = `state state-${bot.state}`;
  if (bot.trading && bot.trading.state !== "active") c.state.textContent += ` (${bot.trading.state})`;
  c.mode.textContent = bot.mode;
  c.safe_mode.textContent = bot.safe_mode ? "yes" : "";
  c.position.textContent = number(bot.position.base, 8);
  c.pnl.textContent = `${number(bot.pnl.total, 2)} ${bot.pnl.currency}`;
  c.pnl.className = "num " + (bot.pnl.total < 0 ? "neg" : bot.pnl.total > 0 ? "pos" : "");
  c.open_orders.textContent = bot.open_orders;
  c.fills.textContent = bot.fills;
  c.tick_age.textContent = ago(bot.last_tick);
  c.restarts.textContent = bot.restarts;
  c.last_refusal.textContent = bot.last_refusal || "";
  c.last_refusal.title = bot.last_refusal || "";
  c.error.textContent = bot.error || "";
  c.error.title = bot.error || "";
  entry.row.classList.toggle("selected", ui.selected === bot.name);
}

function renderBots(bots) {
  const body = document.querySelector("#bots tbody");
  const seen = new Set();
  for (const bot of bots) {
    seen.add(bot.name);
    let entry = ui.rows.get(bot.name);
    if (!entry) { entry = newRow(bot.name); ui.rows.set(bot.name, entry); }
    fill(entry, bot);
    entry.row.hidden = !matches(bot, ui.filter);
  }
  for (const [name, entry] of ui.rows) {
    if (!seen.has(name)) { entry.row.remove(); ui.rows.delete(name); }
  }
  const value = SORT_VALUE[ui.sortKey];
  const ordered = [...bots].sort((a, b) => {
    const x = value(a), y = value(b);
    return (x < y ? -1 : x > y ? 1 : 0) * ui.sortDir || a.name.localeCompare(b.name);
  });
  ordered.forEach((bot, index) => {
    const row = ui.rows.get(bot.name).row;
    if (body.children[index] !== row) body.insertBefore(row, body.children[index] || null);
  });
  const counts = {};
  for (const bot of bots) counts[bot.state] = (counts[bot.state] || 0) + 1;
  const shown = bots.filter((b) => matches(b, ui.filter)).length;
  $("bot-counts").textContent = `${bots.length} bots: ` +
    Object.entries(counts).map(([s, n]) => `${n} ${s}`).join(", ") +
    (shown !== bots.length ? ` (${shown} shown)` : "");
  document.querySelectorAll("#bots th[data-key]").forEach((th) => {
    th.classList.toggle("sorted-asc", th.dataset.key === ui.sortKey && ui.sortDir === 1);
    th.classList.toggle("sorted-desc", th.dataset.key === ui.sortKey && ui.sortDir === -1);
  });
}

function wireBots() {
  document.querySelectorAll("#bots th[data-key]").forEach((th) => {
    th.addEventListener("click", () => {
      ui.sortDir = ui.sortKey === th.dataset.key ? -ui.sortDir : 1;
      ui.sortKey = th.dataset.key;
      if (ui.status) renderBots(ui.status.bots);
    });
  });
  $("bot-filter").addEventListener("input", (event) => {
    ui.filter = event.target.value.trim().toLowerCase();
    if (ui.status) renderBots(ui.status.bots);
  });
  document.querySelector("#bots tbody").addEventListener("click", async (event) => {
    const target = event.target.closest("[data-action]");
    if (!target) return;
    const bot = target.closest("tr").dataset.bot;
    const action = target.dataset.action;
    if (action === "chart") { ui.selected = bot; ui.seriesAt = 0; await loadSeries(); if (ui.status) renderBots(ui.status.bots); }
    else if (action === "start") await act(`Start ${bot}`, "/start", { bot });
    else if (action === "safe") await act(`Safe-mode start ${bot}`, "/start", { bot, safe_mode: true });
    else if (action === "stop") await act(`Stop ${bot}`, "/stop", { bot, reason: "stopped from the dashboard" });
  });
  $("start-sequential").addEventListener("click", () => act("Start all, one by one", "/start-sequential", {}));
}

// -- the chart -------------------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function stepPath(points, x, y) {
  // A step line: a value holds until the next fill changes it.
  let d = "";
  points.forEach((p, i) => {
    const px = x(p.time).toFixed(1), py = y(p.value).toFixed(1);
    d += i === 0 ? `M${px},${py}` : `H${px}V${py}`;
  });
  return d;
}

function drawChart(series) {
  const chart = $("chart");
  chart.replaceChildren();
  const points = series.points.map((p) => ({ ...p, time: Date.parse(p.t) }));
  $("chart-note").textContent = `${series.fills} fills, ${points.length} points; PnL in ${series.currency} (${series.pnl})`;
  if (points.length < 2) {
    chart.append(svg("text", { x: 20, y: 110 }, points.length ? "one fill so far" : "no fills yet"));
    return;
  }
  const W = 900, H = 220, L = 60, R = 60, T = 10, B = 20;
  const t0 = points[0].time, t1 = points[points.length - 1].time || t0 + 1;
  const x = (t) => L + ((t - t0) / Math.max(1, t1 - t0)) * (W - L - R);
  const scale = (values, top, bottom) => {
    let lo = Math.min(...values), hi = Math.max(...values);
    if (lo === hi) { lo -= 1; hi += 1; }
    return { f: (v) => bottom - ((v - lo) / (hi - lo)) * (bottom - top), lo, hi };
  };
  const pnl = scale(points.map((p) => p.pnl), T, H - B);
  const pos = scale(points.map((p) => p.position), T, H - B);
  chart.append(svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }));
  chart.append(svg("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }));
  chart.append(svg("path", { d: stepPath(points.map((p) => ({ time: p.time, value: p.pnl })), x, pnl.f), class: "pnl" }));
  chart.append(svg("path", { d: stepPath(points.map((p) => ({ time: p.time, value: p.position })), x, pos.f), class: "pos" }));
  chart.append(svg("text", { x: 2, y: T + 10 }, number(pnl.hi, 2)));
  chart.append(svg("text", { x: 2, y: H - B }, number(pnl.lo, 2)));
  chart.append(svg("text", { x: W - R + 4, y: T + 10 }, number(pos.hi, 6)));
  chart.append(svg("text", { x: W - R + 4, y: H - B }, number(pos.lo, 6)));
  chart.append(svg("text", { x: L, y: H - 4 }, new Date(t0).toLocaleString()));
  chart.append(svg("text", { x: W - R - 130, y: H - 4 }, new Date(t1).toLocaleString()));
}

async function loadSeries() {
  if (!ui.selected) return;
  $("chart-bot").textContent = ui.selected;
  ui.seriesAt = Date.now();
  try {
    const result = await api(`/bots/${encodeURIComponent(ui.selected)}/series?points=300`);
    if (result.ok) drawChart(result.data);
    else $("chart-note").textContent = `series: ${why(result)}`;
  } catch (error) {
    $("chart-note").textContent = "series: the coordinator did not answer";
  }
}

// -- the other panels ------------------------------------------------------------------------

function rows(container, lines) {
  container.replaceChildren(...(lines.length ? lines : [el("div", "none", "muted")]));
}

function line(parts) {
  const div = el("div");
  for (const part of parts) div.append(typeof part === "string" ? document.createTextNode(part) : part);
  return div;
}

function pill(text, kind) { return el("span", text, `pill ${kind}`); }

function renderBreakers(breakers) {
  const all = [breakers.global, ...Object.values(breakers.exchanges || {})].filter(Boolean);
  rows($("breakers"), all.map((b) => line([
    `${b.name} `, pill(b.state, b.state === "closed" ? "ok" : "bad"),
    ` ${(100 * (b.failure_rate || 0)).toFixed(0)} % failures of ${b.calls_in_window} calls`,
    b.reason ? `: ${b.reason}` : "", b.latched ? " (latched: admin reset)" : "",
  ])));
}

async function renderAlerts() {
  const result = await api("/alerts");
  if (!result.ok) { rows($("alerts"), [el("div", why(result), "muted")]); return; }
  const data = result.data;
  const lines = data.firing.map((a) => line([
    pill(a.severity, a.severity === "critical" ? "bad" : "warn"), ` ${a.name}: ${a.summary}`,
    ` (since ${when(a.since)})`,
  ]));
  for (const a of data.pending) lines.push(line([pill("pending", "warn"), ` ${a.name}: ${a.summary}`]));
  if (!lines.length) lines.push(line([pill("ok", "ok"), " nothing firing"]));
  rows($("alerts"), lines);
}

async function renderAudit() {
  const result = await api("/audit?limit=15");
  if (!result.ok) return;
  rows($("audit"), result.data.events.map((e) => line([
    `${when(e.at)}  ${e.actor}  ${e.action}`, e.subject ? ` ${e.subject}` : "",
    `  → ${e.result}`, e.reason ? `  "${e.reason}"` : "",
  ])));
}

async function renderBackups() {
  const result = await api("/backups");
  if (!result.ok) { rows($("backups"), [el("div", why(result), "muted")]); return; }
  rows($("backups"), result.data.backups.slice(0, 6).map((b) => line([
    `${b.name}  ${when(b.created_at)}  ${number(b.size / 1024, 1)} KiB  `,
    pill(b.verified === true ? "verified" : b.verified === false ? "FAILED" : "not checked",
      b.verified === true ? "ok" : b.verified === false ? "bad" : "warn"),
    b.error ? `  ${b.error}` : "",
  ])));
}

function renderReconciliation(status) {
  const rec = status.reconciliation || {};
  const last = rec.last;
  const lines = [];
  if (last) {
    const count = (v) => (Array.isArray(v) ? v.length : typeof v === "number" ? v : 0);
    lines.push(line([`${when(last.at)} (${last.trigger})  `,
      pill(last.clean ? "clean" : "differences", last.clean ? "ok" : "bad"),
      `  ${count(last.differences)} difference(s), ${count(last.corrections)} correction(s)` +
      `${last.applied ? " applied" : ""}, ${count(last.remaining)} remaining, ${count(last.errors)} error(s)`]));
  } else {
    lines.push(el("div", "none in this process yet", "muted"));
  }
  if (rec.next_at) lines.push(el("div", `next: ${when(rec.next_at)}`, "muted"));
  rows($("reconciliation"), lines);
}

// -- polling ---------------------------------------------------------------------------------

let timer = null;

async function poll(once) {
  if (!once && timer !== null) { clearTimeout(timer); timer = null; }
  let delay = POLL_MS;
  try {
    const result = await api("/status");
    if (!result.ok || !result.data) throw new Error(why(result));
    ui.status = result.data;
    ui.failures = 0;
    ui.downSince = null;
    $("offline").hidden = true;
    render(result.data);
    if (once) return;
    ui.polls += 1;
    if (ui.polls % SIDE_EVERY === 1) await renderSide(result.data);
    if (ui.selected && Date.now() - ui.seriesAt > SERIES_MS) await loadSeries();
  } catch (error) {
    if (once) return;
    ui.failures += 1;
    ui.downSince = ui.downSince || new Date();
    delay = Math.min(MAX_BACKOFF_MS, POLL_MS * 2 ** Math.min(ui.failures, 8));
    const banner = $("offline");
    banner.hidden = false;
    banner.textContent = `The coordinator is not answering (since ${ui.downSince.toLocaleTimeString()}, ` +
      `${ui.failures} tries: ${error.message || error.name}). What is shown is as it was then. ` +
      `Next try in ${Math.round(delay / 1000)} s.`;
  }
  if (!once) timer = setTimeout(() => poll(false), delay);
}

async function renderSide(status) {
  renderBreakers(status.circuit_breaker);
  renderReconciliation(status);
  await Promise.allSettled([renderAlerts(), renderAudit(), renderBackups()]);
}

function render(status) {
  const info = status.coordinator || {};
  $("coordinator-info").textContent =
    `version ${info.version || "?"}, up ${ago(info.started_at)}` + (info.accepting_actions === false ? ", shutting down" : "");
  renderKillSwitch(status.kill_switch);
  renderBots(status.bots);
}

// -- start -----------------------------------------------------------------------------------

function wireToken() {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token-input").value.trim();
    $("token-input").value = "";
    if (!value) { say("Token: paste the token from data/control.token", false); return; }
    sessionStorage.setItem(TOKEN_KEY, value);
    showTokenState();
    say("Token kept for this tab (session storage); it is sent only as a bearer header", true);
  });
  $("token-forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showTokenState();
    say("Token forgotten", true);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  wireToken();
  wireKillSwitch();
  wireBots();
  showTokenState();
  poll(false);
});
