// fieldgate local page: plain JavaScript, no build step, no network access
// beyond this gateway. Everything goes through the JSON API under api/v1/.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];
let csrf = "";
let cfg = null; // the running config (redacted), as its YAML shape
const pages = ["overview", "uplink", "southbound", "broker", "live", "config", "diagnostics"];

function el(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids.flat()) if (k !== null && k !== undefined) e.append(k instanceof Node ? k : String(k));
  return e;
}

// labelCells gives every cell of a table.stack the name of its column
// (data-label), shown before the cell when the table is stacked on a phone.
function labelCells() {
  for (const t of $$("table.stack")) {
    const heads = $$("thead th", t).map(th => th.textContent.trim());
    if (!heads.length) continue;
    for (const tr of $$("tbody tr", t)) [...tr.children].forEach((td, i) => { if (td.dataset.label === undefined) td.dataset.label = td.colSpan > 1 ? "" : heads[i] || ""; });
  }
}
let labelQueued = false;
new MutationObserver(() => {
  if (labelQueued) return;
  labelQueued = true;
  requestAnimationFrame(() => { labelQueued = false; labelCells(); });
}).observe(document.body, { childList: true, subtree: true });

class APIError extends Error {
  constructor(status, body) { super(body.error || ("HTTP " + status)); this.status = status; this.body = body; }
}

// fetchT is fetch with a time limit: a gateway that is stopped (or hangs)
// shows as unreachable instead of leaving the page waiting.
async function fetchT(url, opts = {}, ms = 10000) {
  const ac = new AbortController();
  const t = setTimeout(() => ac.abort(), ms);
  try { return await fetch(url, Object.assign({}, opts, { signal: ac.signal })); }
  finally { clearTimeout(t); }
}

async function api(method, path, body, raw) {
  const opts = { method, headers: {}, credentials: "same-origin" };
  if (method !== "GET") opts.headers["X-CSRF-Token"] = csrf;
  if (body !== undefined) {
    if (raw) { opts.body = body; opts.headers["Content-Type"] = raw; }
    else { opts.body = JSON.stringify(body); opts.headers["Content-Type"] = "application/json"; }
  }
  // Slow answers (a connection test, a read of a slow device, a config
  // applied) get longer; a network error means the gateway is away.
  const ms = method === "GET" ? 15000 : 60000;
  let r;
  try { r = await fetchT("api/v1/" + path, opts, ms); }
  catch (e) {
    if (e.name === "AbortError") throw new APIError(0, { error: `The gateway did not answer within ${ms / 1000} s.` });
    unreachable();
    throw new APIError(0, { error: "The gateway does not answer: it is unreachable or restarting. The page retries on its own." });
  }
  if (!reachable) recovered();
  const text = await r.text();
  let data = {};
  try { data = text ? JSON.parse(text) : {}; } catch { data = { error: text }; }
  if (r.status === 401 && !path.startsWith("login") && !path.startsWith("session")) { show("login"); }
  if (!r.ok) throw new APIError(r.status, data);
  return data;
}

// showErrors lists an API error's per-field errors in a form's .errs list
// and, when fieldFor maps an error's config path to an input, marks that
// input and writes the error under it in words. Old errors go first.
function showErrors(form, err, fieldFor) {
  const ul = $(".errs", form) || form;
  ul.setAttribute("role", "alert"); // errors are announced
  ul.replaceChildren();
  const root = form.closest ? (form.closest("form") || form) : form;
  for (const x of $$(".ferr", root)) x.remove();
  for (const x of $$("[aria-invalid]", root)) x.removeAttribute("aria-invalid");
  if (!err) return;
  const fields = (err.body && err.body.fields) || err.fields || [];
  if (fields.length === 0) ul.append(el("li", {}, err.message));
  for (const f of fields) {
    const hit = f.field && fieldFor ? fieldFor(f.field) : null;
    // The form's own label for a field it knows, else the gateway's words
    // (f.words: where, as the forms name it, and the reason); never a
    // config path.
    const words = hit && hit.input && hit.words ? hit.words + ": " + f.error : (f.words || (f.field ? f.field + ": " + f.error : f.error));
    // A config file's errors also give the key, to find it in the file.
    ul.append(el("li", {}, hit && hit.key ? words + " (" + hit.key + " in the file)" : words));
    if (hit && hit.input) markField(hit.input, f.error);
  }
  const first = $("[aria-invalid]", root);
  if (first) first.focus({ preventScroll: false });
}

// markField shows an error under one input and flags it for screen readers.
function markField(input, msg) {
  input.setAttribute("aria-invalid", "true");
  const id = "ferr-" + Math.random().toString(36).slice(2);
  const p = el("span", { class: "ferr", id, role: "alert" }, msg);
  input.setAttribute("aria-describedby", id);
  (input.closest("label") || input).after(p);
}

// clientError builds an error shaped like the API's, for checks made here.
function clientError(fields) { return { message: "Please correct the marked fields.", fields }; }

function banner(text) {
  const b = $("#banner");
  b.textContent = text || "";
  b.hidden = !text;
}

let bannerTimer = null;
function restartNote(res) {
  clearTimeout(bannerTimer);
  if (res && res.restart && res.restart.length) banner("Saved. These settings wait for a restart (use \"Restart now\" above): " + res.restart.join(", "));
  else banner("Saved and applied.");
  bannerTimer = setTimeout(() => banner(""), 8000);
}

// ---- reachability: a banner while the gateway does not answer, stale
// values greyed out, and a reconnect (with a new login after a restart)
// that comes back to the same page.

let reachable = true, loggedIn = false;
// restartingNow is true while "Restart now" (parts.js) waits for the gateway.
const restartingNow = () => typeof partsRestarting !== "undefined" && partsRestarting;
function unreachable() {
  if (!reachable || restartingNow()) return;
  reachable = false;
  $("#offline-since").textContent = new Date().toLocaleTimeString();
  $("#offline").hidden = false;
  document.body.classList.add("stale");
}

// recovered hides the banner when the gateway answers again. The page
// stays as it is (a form being filled keeps its input; the polls and live
// streams pick up by themselves) unless the session is gone: then the
// login comes, and after it the same page.
function recovered() {
  if (reachable) return;
  reachable = true;
  $("#offline").hidden = true;
  document.body.classList.remove("stale");
  heartbeat();
}

// heartbeat asks for the session every 2 s: it notices the gateway going
// away (two missed answers in a row, so that a slow answer on a busy
// board is not an outage) and coming back, and a session lost to a restart.
let missed = 0;
async function heartbeat() {
  if (restartingNow()) return; // parts.js's "Restart now" reconnects on its own
  let s;
  try {
    const r = await fetchT("api/v1/session", { credentials: "same-origin" }, 5000);
    s = await r.json();
  } catch (e) {
    if (e.name !== "AbortError" || ++missed >= 2) unreachable();
    return;
  }
  missed = 0;
  if (!reachable) { recovered(); return; }
  if (s.setup_required && !$("#nav").hidden) { loggedIn = false; show("setup"); return; }
  if (loggedIn && !s.logged_in && !s.setup_required) {
    loggedIn = false;
    banner("The gateway restarted or the session ended: log in again to go on where you were.");
    show("login");
  }
}
setInterval(heartbeat, 2000);

function dl(target, rows) {
  target.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v === undefined || v === "" ? "—" : v)]));
}

function ago(t) {
  if (!t) return "—";
  const s = Math.round((Date.now() - new Date(t)) / 1000);
  if (s < 120) return s + " s";
  if (s < 7200) return Math.round(s / 60) + " min";
  if (s < 172800) return Math.round(s / 3600) + " h";
  return Math.round(s / 86400) + " days";
}

// ---- navigation and session ----

function show(name) {
  if (name === "login" || name === "setup") loggedIn = false;
  for (const s of $$(".page")) s.hidden = s.id !== "p-" + name;
  for (const a of $$("nav a")) a.classList.toggle("active", a.getAttribute("href") === "#" + name);
  $("#nav").hidden = name === "login" || name === "setup";
  $("#menu").hidden = $("#nav").hidden;
  if (window.innerWidth <= 700) $("#nav").classList.add("closed");
  stopPolling();
  const load = loaders[name];
  if (load) load().catch(e => banner(e.message));
}

// navSeq numbers navigations: an answer to route()'s session request that
// arrives after a later navigation (a login that finished first) is stale
// and must not send the page back to the login form.
let navSeq = 0;

async function route() {
  const seq = ++navSeq;
  const s = await api("GET", "session");
  if (seq !== navSeq) return;
  if (s.setup_required) return show("setup");
  if (!s.logged_in) return show("login");
  csrf = s.csrf; loggedIn = true;
  const name = location.hash.slice(1);
  show(pages.includes(name) ? name : "overview");
}

window.addEventListener("hashchange", () => route().catch(e => banner(e.message)));
$("#menu").addEventListener("click", () => { const n = $("#nav"); n.classList.toggle("closed"); $("#menu").setAttribute("aria-expanded", String(!n.classList.contains("closed"))); });

$("#setup-form").addEventListener("submit", async ev => {
  ev.preventDefault();
  const f = ev.target, err = $("[data-for=form]", f);
  if (f.password.value !== f.password2.value) { err.textContent = "The passwords differ."; return; }
  try {
    const r = await api("POST", "setup", { setup_code: f.setup_code.value, password: f.password.value, gateway_id: f.gateway_id.value, lan: window.setupLAN && window.setupLAN() });
    csrf = r.csrf; loggedIn = true; f.reset(); location.hash = "#overview"; route();
  } catch (e) {
    const label = { setup_code: "Setup code", password: "Admin password", gateway_id: "Gateway id (site name)" };
    err.textContent = (e.body.fields || []).map(x => label[x.field] ? label[x.field] + ": " + x.error : x.words || x.error).join("; ") || e.message;
  }
});

$("#login-form").addEventListener("submit", async ev => {
  ev.preventDefault();
  const f = ev.target, err = $("[data-for=form]", f);
  err.textContent = "";
  try {
    const r = await api("POST", "login", { password: f.password.value });
    csrf = r.csrf; f.reset(); loggedIn = true; navSeq++;
    if (/log in again/.test($("#banner").textContent)) banner("");
    const name = location.hash.slice(1);
    show(pages.includes(name) ? name : "overview");
  } catch (e) { err.textContent = e.message; }
});

$("#logout").addEventListener("click", async () => { await api("POST", "logout"); csrf = ""; show("login"); });

let timers = [];
function poll(fn, ms) {
  const run = () => Promise.resolve().then(fn).catch(() => { /* shown by the unreachable banner or the next round */ });
  run(); timers.push(setInterval(run, ms));
}
function stopPolling() {
  timers.forEach(clearInterval); timers = [];
  if (live) live.close(); live = null;
  if (sbLive) sbLive.close(); sbLive = null;
}

async function loadConfig() { cfg = await api("GET", "config"); $("#gwid").textContent = cfg.gateway.id || ""; return cfg; }

// ---- overview ----

// Human units for the overview.
function bytes(n) {
  if (n === undefined || n === null) return "—";
  const u = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i === 0 ? String(n) : n.toFixed(n < 10 ? 1 : 0)) + " " + u[i];
}
function duration(sec) {
  sec = Math.max(0, Math.round(sec));
  const d = Math.floor(sec / 86400), h = Math.floor(sec % 86400 / 3600), m = Math.floor(sec % 3600 / 60);
  if (d) return `${d} d ${h} h`;
  if (h) return `${h} h ${m} min`;
  if (m) return `${m} min ${sec % 60} s`;
  return sec + " s";
}
function pct(part, whole) { return whole ? Math.round(100 * part / whole) + " %" : "—"; }
// num shows a number without float noise (at most 3 decimals, trailing zeros cut).
function num(v) { return typeof v === "number" ? String(+v.toFixed(3)) : String(v); }

// The history comes from the gateway (GET api/v1/history: one sample
// every 5 s for 24 h, kept in its memory), so that a reload or another
// device draws the same chart; the chosen range and series are kept in
// this browser (localStorage).
const rangeKey = "fieldgate.chartRange", seriesKey = "fieldgate.chartSeries";
const ranges = { "15m": 900, "1h": 3600, "6h": 21600, "24h": 86400 };
const chartSeries = {
  msgs: { unit: "messages/s", lines: [["in", "#0b6bcb", "in"], ["out", "#c25e00", "out"]] },
  clients: { unit: "clients", lines: [["clients", "#0b6bcb", "clients"]] },
  cpu: { unit: "% of one core", lines: [["cpu", "#0b6bcb", "CPU"]] },
  memory: { unit: "MB", scale: 1 / 1048576, lines: [["memory", "#0b6bcb", "memory"]] },
  outbox: { unit: "messages", lines: [["outbox", "#c25e00", "waiting"]] },
};
let histSamples = [];
try { $("#chart-range").value = ranges[localStorage.getItem(rangeKey)] ? localStorage.getItem(rangeKey) : "15m"; } catch { }
try { $("#chart-series").value = chartSeries[localStorage.getItem(seriesKey)] ? localStorage.getItem(seriesKey) : "msgs"; } catch { }
$("#chart-range").addEventListener("change", ev => { try { localStorage.setItem(rangeKey, ev.target.value); } catch { } loadHistory().catch(() => { }); });
$("#chart-series").addEventListener("change", ev => { try { localStorage.setItem(seriesKey, ev.target.value); } catch { } drawChart(); });

async function loadHistory() {
  const r = await api("GET", "history?range=" + encodeURIComponent($("#chart-range").value));
  histSamples = (r.samples || []).map(p => Object.assign({}, p, { t: new Date(p.t).getTime() }));
  drawChart();
}

// clock is a time of day for an axis label: hours and minutes.
function clock(t) { const d = new Date(t); return String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0"); }

function drawChart() {
  const c = $("#chart"), g = c.getContext("2d");
  // Drawn at the size it is shown, in device pixels, so that the axis
  // labels stay readable on a phone.
  const dpr = window.devicePixelRatio || 1, w = c.clientWidth || 300, h = c.clientHeight || 180;
  if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) { c.width = Math.round(w * dpr); c.height = Math.round(h * dpr); }
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  const left = 48, bottom = 34, top = 18, right = 10;
  const name = $("#chart-series").value, ser = chartSeries[name] || chartSeries.msgs, k = ser.scale || 1;
  const range = (ranges[$("#chart-range").value] || 900) * 1000, now = Date.now();
  const pts = histSamples.filter(p => now - p.t <= range);
  g.clearRect(0, 0, w, h);
  const raw = Math.max(name === "cpu" ? 10 : 1, ...pts.flatMap(p => ser.lines.map(([key]) => p[key] * k)));
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const max = Math.ceil(raw / mag) * mag;
  const X = t => left + (w - left - right) * (1 - (now - t) / range), Y = v => h - bottom - (h - bottom - top) * v / max;
  g.font = "12px system-ui, sans-serif"; g.fillStyle = "#4a5361"; g.strokeStyle = "#c4cad3"; g.lineWidth = 1;
  // The y axis: its unit above it, gridlines with values.
  g.textAlign = "left"; g.textBaseline = "top"; g.fillText(ser.unit, 4, 2);
  for (let i = 0; i <= 4; i++) {
    const v = max * i / 4, y = Math.round(Y(v)) + .5;
    g.beginPath(); g.moveTo(left, y); g.lineTo(w - right, y); g.stroke();
    g.textAlign = "right"; g.textBaseline = "middle"; g.fillText(num(v), left - 6, y);
  }
  // The x axis: times of day, "now" at the right, and what it is.
  g.textBaseline = "top";
  for (let i = 0; i <= 4; i++) {
    g.textAlign = i === 0 ? "left" : i === 4 ? "right" : "center";
    const t = now - range + range * i / 4;
    g.fillText(i === 4 ? "now" : clock(t), X(t), h - bottom + 4);
  }
  g.textAlign = "center"; g.fillText("time of day (this browser's clock)", left + (w - left - right) / 2, h - 14);
  for (const [key, color] of ser.lines) {
    g.strokeStyle = color; g.lineWidth = 2; g.beginPath();
    pts.forEach((p, i) => { i ? g.lineTo(X(p.t), Y(p[key] * k)) : g.moveTo(X(p.t), Y(p[key] * k)); });
    g.stroke();
  }
  $("#chart").setAttribute("aria-label", `${$("#chart-series").selectedOptions[0].text}, ${$("#chart-range").selectedOptions[0].text}: ${pts.length} samples` +
    (pts.length ? ", latest " + ser.lines.map(([key, , label]) => label + " " + num(+(pts[pts.length - 1][key] * k).toFixed(1))).join(", ") : ""));
  $("#chart-legend").firstElementChild.hidden = name !== "msgs";
  $("#chart-legend").children[1].hidden = name !== "msgs";
}

let last = null;
async function loadOverview() {
  drawChart();
  last = null;
  poll(async () => {
    const s = await api("GET", "status");
    $("#gwid").textContent = s.gateway_id || "";
    dl($("#ov-gw"), [["Id", s.gateway_id], ["Version", s.version], ["Up for", s.started ? duration((Date.now() - new Date(s.started)) / 1000) : ""]]);
    const b = s.board || {}, id = b.identity || {}, he = b.health || {};
    const board = [];
    if (id.model) board.push(["Model", id.model]);
    if (id.serial) board.push(["Serial", id.serial]);
    for (const i of id.interfaces || []) board.push([i.name, i.mac]);
    if (he.has_cpu_temp) board.push(["CPU temperature", num(he.cpu_celsius) + " °C"]);
    if (he.mem_total) board.push(["Memory free", bytes(he.mem_available) + " of " + bytes(he.mem_total) + " (" + pct(he.mem_available, he.mem_total) + ")"]);
    if (he.process_rss) board.push(["Gateway uses", bytes(he.process_rss)]);
    if (he.data_total) board.push(["Data disk free", bytes(he.data_free) + " of " + bytes(he.data_total) + " (" + pct(he.data_free, he.data_total) + ")" + (he.reserve_reached ? " — reserve reached" : "")]);
    dl($("#ov-board"), board.length ? board : [["Board", "no board information"]]);
    const cl = s.clients || {};
    const total = Object.values(cl).reduce((a, n) => a + n, 0);
    dl($("#ov-clients"), [["Connected", String(total)], ...Object.entries(cl).map(([k, v]) => [k, String(v ?? 0)])]);
    const u = s.uplink || {};
    dl($("#ov-uplink"), [["State", el("span", { class: u.connected ? "on" : "off" }, u.state || "—")], ["Transport", u.transport], ["Server", u.server], ["Since", u.since ? ago(u.since) : ""], ["Last error", u.last_error]]);
    const o = s.outbox || {};
    dl($("#ov-outbox"), [["Messages waiting", String(o.messages ?? 0)], ["Size", bytes(o.bytes ?? 0)], ["Oldest", o.oldest ? ago(o.oldest) + " old" : "—"], ["Dropped", String(o.dropped ?? 0)]]);
    $("#ov-devices tbody").replaceChildren(...(s.devices || []).map(d => el("tr", {}, el("td", {}, d.name), el("td", {}, d.kind), el("td", { class: d.online ? "on" : "off" }, d.online ? "online" : "offline"), el("td", {}, d.last_error || ""))));
    if (!(s.devices || []).length) $("#ov-devices tbody").append(el("tr", {}, el("td", { colspan: 4, class: "note" }, "No southbound devices yet: add one on the Southbound page.")));
    const now = Date.now();
    if (last && now > last.t) {
      const dt = (now - last.t) / 1000;
      const pin = Math.max(0, (s.messages_in - last.in) / dt), pout = Math.max(0, (s.messages_out - last.out) / dt);
      $("#rates").textContent = `now ${num(+pin.toFixed(1))} in, ${num(+pout.toFixed(1))} out`;
    }
    last = { t: now, in: s.messages_in, out: s.messages_out };
  }, 2000);
  poll(loadHistory, 5000);
}

// ---- uplink ----

// A rule list is edited as rows of labelled inputs (fields: key, label,
// options or num), never as JSON.
function ruleRow(fields, r = {}) {
  return el("div", { class: "rule" },
    ...fields.map(f => el("label", {}, f.label, " ", f.options
      ? el("select", { name: f.key }, ...f.options.map(o => el("option", { value: o[0], selected: String(r[f.key] ?? f.def ?? "") === o[0] }, o[1])))
      : el("input", { name: f.key, value: r[f.key] ?? f.def ?? "", placeholder: f.ph || "", autocomplete: "off", spellcheck: "false" }))),
    el("button", { type: "button", class: "small danger", onclick: ev => ev.target.closest(".rule").remove() }, "Remove rule"));
}
function readRules(box, fields) {
  return $$(".rule", box).map(row => Object.fromEntries(fields.map(f => {
    const v = $(`[name="${f.key}"]`, row).value.trim();
    return [f.key, f.num ? +v : v];
  })));
}
// ruleField maps "…rules[i].key" of a rule list to the input and words.
function ruleField(box, fields, what, i, key) {
  const row = $$(".rule", box)[i], f = fields.find(x => x.key === key);
  return { input: row && $(`[name="${key}"]`, row), words: `${what} ${i + 1}, ${f ? f.label.toLowerCase() : key}` };
}
// checkRules names every empty required field of a rule list.
function checkRules(box, fields, what, path) {
  const out = [];
  $$(".rule", box).forEach((row, i) => {
    for (const f of fields) if (f.required && !$(`[name="${f.key}"]`, row).value.trim()) out.push({ field: `${path}[${i}].${f.key}`, error: "is empty: " + f.required });
  });
  return out;
}

const qosOptions = [["0", "0 — at most once"], ["1", "1 — at least once"]];
const forwardFields = [
  { key: "filter", label: "Local topic filter", ph: "southbound/#", required: "say which local topics to send" },
  { key: "remote_topic", label: "Cloud topic", ph: "gateways/{gateway_id}/{topic}", required: "say where they go in the cloud" },
  { key: "qos", label: "QoS", options: qosOptions, def: "1", num: true }];
const downlinkFields = [
  { key: "filter", label: "Cloud topic filter", ph: "commands/{gateway_id}/#", required: "say which cloud topics to receive" },
  { key: "local_topic", label: "Local topic", ph: "{suffix}", required: "say where they are published here" },
  { key: "qos", label: "QoS", options: qosOptions, def: "1", num: true }];

function serverRow(s = {}) {
  return el("tr", {},
    el("td", {}, el("input", { name: "host", value: s.host || "", "aria-label": "server host name or address", autocomplete: "off" })),
    ...[["quic_port", "QUIC port"], ["tls_port", "TLS port"], ["tcp_port", "TCP port"]].map(([k, label]) => el("td", {}, el("input", { name: k, inputmode: "numeric", value: s[k] || 0, "aria-label": label + " (0: not used)" }))),
    el("td", {}, el("button", { type: "button", class: "small danger", onclick: ev => ev.target.closest("tr").remove() }, "Remove")));
}

function uplinkField(path) {
  let m = path.match(/^uplink\.servers\[(\d+)\]\.(\w+)/);
  if (m) { const tr = $$("#servers tbody tr")[+m[1]]; return { input: tr && $(`[name=${m[2]}]`, tr), words: `Server ${+m[1] + 1}, ${m[2].replace("_", " ")}` }; }
  m = path.match(/^uplink\.forward\[(\d+)\]\.(\w+)/);
  if (m) return ruleField($("#forward-rules"), forwardFields, "Forward rule", +m[1], m[2]);
  m = path.match(/^uplink\.downlink\[(\d+)\]\.(\w+)/);
  if (m) return ruleField($("#downlink-rules"), downlinkFields, "Downlink rule", +m[1], m[2]);
  m = path.match(/^uplink\.(\w+(\.\w+)?)$/);
  if (m) { const i = $(`#uplink-form [name="${m[1]}"]`); return { input: i, words: m[1].replace(/[._]/g, " ") }; }
  return null;
}

function uplinkFromForm(f) {
  const u = structuredClone(cfg.uplink);
  u.enabled = f.enabled.checked;
  u.transport = f.transport.value;
  u.servers = $$("#servers tbody tr").map(tr => ({ host: $("[name=host]", tr).value.trim(), quic_port: +$("[name=quic_port]", tr).value, tls_port: +$("[name=tls_port]", tr).value, tcp_port: +$("[name=tcp_port]", tr).value }));
  u.client_id = f.client_id.value; u.username = f.username.value;
  u.password = f.password.value || (cfg.uplink.password ? "<redacted>" : "");
  u.tls = Object.assign({}, u.tls, { ca: f["tls.ca"].value, cert: f["tls.cert"].value, key: f["tls.key"].value, server_name: f["tls.server_name"].value });
  const bad = [...checkRules($("#forward-rules"), forwardFields, "Forward rule", "uplink.forward"), ...checkRules($("#downlink-rules"), downlinkFields, "Downlink rule", "uplink.downlink")];
  if (bad.length) throw clientError(bad);
  u.forward = readRules($("#forward-rules"), forwardFields);
  u.downlink = readRules($("#downlink-rules"), downlinkFields);
  return u;
}

async function loadUplink() {
  await loadConfig();
  const f = $("#uplink-form"), u = cfg.uplink;
  f.enabled.checked = !!u.enabled; f.transport.value = u.transport;
  $("#servers tbody").replaceChildren(...(u.servers || []).map(serverRow));
  f.client_id.value = u.client_id || ""; f.username.value = u.username || ""; f.password.value = "";
  f.password.placeholder = u.password ? "(unchanged)" : "";
  const t = u.tls || {};
  f["tls.ca"].value = t.ca || ""; f["tls.cert"].value = t.cert || ""; f["tls.key"].value = t.key || ""; f["tls.server_name"].value = t.server_name || "";
  $("#forward-rules").replaceChildren(...(u.forward || []).map(r => ruleRow(forwardFields, r)));
  $("#downlink-rules").replaceChildren(...(u.downlink || []).map(r => ruleRow(downlinkFields, r)));
  showErrors(f); $("#uplink-result").textContent = "";
  poll(async () => {
    const s = (await api("GET", "status")).uplink || {};
    dl($("#up-status"), [["State", el("span", { class: s.connected ? "on" : "off" }, s.state || "—")], ["Transport", s.transport], ["Server", s.server], ["Forwarded", String(s.forwarded ?? 0)], ["Reconnects", String(s.reconnects ?? 0)], ["Last error", s.last_error]]);
  }, 2000);
}

$("#add-server").addEventListener("click", () => $("#servers tbody").append(serverRow({ quic_port: 14567, tls_port: 8883 })));
$("#add-forward").addEventListener("click", () => $("#forward-rules").append(ruleRow(forwardFields, { filter: "southbound/#", remote_topic: "gateways/{gateway_id}/{topic}", qos: 1 })));
$("#add-downlink").addEventListener("click", () => $("#downlink-rules").append(ruleRow(downlinkFields, { qos: 1 })));
$("#uplink-form").addEventListener("submit", async ev => {
  ev.preventDefault();
  const f = ev.target;
  try { showErrors(f); restartNote(await api("PUT", "config/uplink", uplinkFromForm(f))); await loadConfig(); }
  catch (e) { showErrors(f, e, uplinkField); }
});
$("#uplink-test").addEventListener("click", async () => {
  const f = $("#uplink-form"), out = $("#uplink-result");
  out.className = ""; out.textContent = "Trying…";
  try {
    showErrors(f);
    const r = await api("POST", "uplink/test", uplinkFromForm(f));
    out.className = r.ok ? "ok" : "err";
    out.textContent = r.ok ? "Connected: these settings work." : "Failed: " + r.error;
  } catch (e) { out.textContent = ""; showErrors(f, e, uplinkField); }
});
for (const input of $$("[data-upload]")) {
  input.addEventListener("change", async () => {
    const file = input.files[0];
    if (!file) return;
    const name = input.dataset.upload.replace(".", "-") + ".pem";
    try {
      const r = await api("POST", "files/" + name, await file.text(), "application/x-pem-file");
      $(`#uplink-form [name="${input.dataset.upload}"]`).value = r.path;
    } catch (e) { showErrors($("#uplink-form"), e); }
  });
}

// ---- southbound: a tag table per device ----

const registers = ["holding", "input", "coil", "discrete"];
const registerWords = { holding: "holding register", input: "input register", coil: "coil", discrete: "discrete input" };
const types = ["INT16", "UINT16", "INT32", "UINT32", "INT64", "UINT64", "FLOAT32", "FLOAT64", "STRING", "BOOL", "BIT"];
const orders = [["ABCD", "ABCD (big-endian)"], ["CDAB", "CDAB (word swap)"], ["BADC", "BADC (byte swap)"], ["DCBA", "DCBA (little-endian)"]];
const sel = (name, opts, v, label) => el("select", { name, "aria-label": label }, ...opts.map(o => Array.isArray(o)
  ? el("option", { value: o[0], selected: o[0] === v }, o[1]) : el("option", { selected: o === v }, o)));
const bitRegister = r => r === "coil" || r === "discrete";

// parseRef reads an address as manuals print it: 40001 (holding register,
// offset 0), 300010, 00001 (coil), 10001 (discrete input), 40001.3 (bit 3).
function parseRef(text) {
  const m = String(text).trim().match(/^([0134])(\d{4,5})(?:\.(\d{1,2}))?$/);
  if (!m) return null;
  const n = +m[2];
  if (n < 1 || n > (m[2].length === 4 ? 9999 : 65536)) return null;
  const register = { 0: "coil", 1: "discrete", 3: "input", 4: "holding" }[m[1]];
  const bit = m[3] === undefined ? undefined : +m[3];
  if (bit !== undefined && (bit > 15 || bitRegister(register))) return null;
  return { register, address: n - 1, bit };
}
// formatRef is the manual's notation of a register and 0-based offset.
function formatRef(register, address, bit) {
  const d = { coil: "0", discrete: "1", input: "3", holding: "4" }[register];
  if (d === undefined || !(address >= 0 && address <= 65535)) return "";
  const n = address + 1, s = n <= 9999 ? String(n).padStart(4, "0") : String(n).padStart(5, "0");
  return d + s + (bit !== undefined && bit !== null ? "." + bit : "");
}

function pointRow(p = {}) {
  const register = p.register || "holding", address = p.address ?? 0;
  const tr = el("tr", {},
    el("td", {}, el("input", { name: "name", value: p.name || "", "aria-label": "point name", autocomplete: "off", placeholder: "e.g. temp" })),
    el("td", {}, el("div", {}, el("input", { name: "ref", value: formatRef(register, address, p.type === "BIT" ? p.bit || 0 : undefined), "aria-label": "address as the manual prints it (40001)", autocomplete: "off", inputmode: "decimal", placeholder: "40001" }),
      el("span", { class: "hint ref-hint" }))),
    el("td", {}, sel("register", registers.map(r => [r, registerWords[r]]), register, "register type")),
    el("td", {}, el("input", { name: "address", inputmode: "numeric", value: address, "aria-label": "offset (0-based protocol address)" })),
    el("td", {}, el("input", { name: "bit", inputmode: "numeric", value: p.bit ?? 0, "aria-label": "bit number 0-15 (BIT type only)" })),
    el("td", {}, sel("type", types, p.type || (bitRegister(register) ? "BOOL" : "UINT16"), "data type")),
    el("td", {}, sel("byte_order", orders, p.byte_order || "ABCD", "byte order of 32/64-bit values")),
    el("td", {}, el("input", { name: "scale", inputmode: "decimal", value: num(p.scale || 1), "aria-label": "scale (value = raw × scale)" })),
    el("td", {}, el("input", { name: "unit", value: p.unit || "", "aria-label": "unit", autocomplete: "off" })),
    el("td", {}, el("label", { class: "check" }, el("input", { name: "writable", type: "checkbox", checked: !!p.writable }), " writable")),
    el("td", {}, el("button", { type: "button", class: "small danger", onclick: ev => ev.target.closest("tr").remove() }, "Remove point")));
  const v = n => $(`[name=${n}]`, tr);
  const sync = fromRef => {
    const hint = $(".ref-hint", tr);
    if (fromRef) {
      const r = parseRef(v("ref").value);
      if (!r) { hint.textContent = v("ref").value.trim() ? "not a manual address: 5 or 6 digits starting with 0, 1, 3 or 4" : ""; return; }
      v("register").value = r.register; v("address").value = r.address;
      if (r.bit !== undefined) { v("type").value = "BIT"; v("bit").value = r.bit; }
      else if (bitRegister(r.register)) v("type").value = "BOOL";
      else if (v("type").value === "BOOL" || v("type").value === "BIT") v("type").value = "UINT16";
    } else {
      v("ref").value = formatRef(v("register").value, +v("address").value, v("type").value === "BIT" ? +v("bit").value : undefined);
    }
    hint.textContent = `= ${registerWords[v("register").value]}, offset ${v("address").value}` + (v("type").value === "BIT" ? ", bit " + v("bit").value : "") + " (stored)";
    v("bit").disabled = v("type").value !== "BIT";
    v("byte_order").disabled = bitRegister(v("register").value) || v("type").value === "BIT";
  };
  v("ref").addEventListener("input", () => sync(true));
  for (const n of ["register", "address", "bit", "type"]) v(n).addEventListener("input", () => sync(false));
  sync(false);
  return tr;
}

function modbus() { return cfg.southbound && cfg.southbound.modbus; }
function prefix() { return (modbus() && modbus().prefix) || "southbound"; }

let sbLive = null;
const sbState = {}; // device → point → {v, q, unit, ts, err, raw}

// fmtValue shows a point's value: numbers as JSON has them (the gateway
// rounds them to the precision the scale implies), booleans as on/off.
function fmtValue(v) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "boolean") return v ? "on" : "off";
  if (typeof v === "number") return String(v);
  return typeof v === "string" ? v : JSON.stringify(v);
}

function deviceCard(d, i) {
  const name = d.name;
  const search = el("input", { type: "search", name: "search", placeholder: "name, unit…", autocomplete: "off" });
  const onlyBad = el("input", { type: "checkbox", name: "only_bad" });
  // A long tag list shows its first 50 matching rows until asked for all.
  let expanded = false;
  const more = el("button", { class: "small secondary", type: "button", onclick: () => { expanded = true; filter(); } });
  const filter = () => {
    const q = search.value.trim().toLowerCase();
    let shown = 0, matched = 0;
    for (const tr of $$("tbody tr[data-point]", card)) {
      const text = tr.dataset.point.toLowerCase() + " " + (tr.dataset.search || "");
      const match = !(q && !text.includes(q)) && !(onlyBad.checked && tr.dataset.bad !== "1");
      if (match) matched++;
      tr.hidden = !match || (!expanded && shown >= 50);
      if (!tr.hidden) shown++;
    }
    more.hidden = shown === matched;
    more.textContent = `Show all ${matched} points`;
  };
  search.addEventListener("input", filter);
  onlyBad.addEventListener("change", filter);
  const rows = (d.points || []).map(p => {
    const writable = p.writable;
    const bool = p.type === "BOOL" || p.type === "BIT" || bitRegister(p.register);
    return el("tr", { "data-point": p.name, "data-search": ((p.unit || "") + " " + (p.description || "") + " " + formatRef(p.register || "holding", p.address ?? 0)).toLowerCase() },
      el("td", {}, el("b", {}, p.name), p.description ? el("div", { class: "hint" }, p.description) : null),
      el("td", {}, formatRef(p.register || "holding", p.address ?? 0, p.type === "BIT" ? p.bit || 0 : undefined) || ((p.register || "") + " " + (p.address ?? ""))),
      el("td", { class: "value" }, "—"),
      el("td", { class: "quality" }, "—"),
      el("td", { class: "unit" }, p.unit || ""),
      el("td", { class: "time" }, "—"),
      el("td", { class: "lasterr" }, ""),
      el("td", { class: "raw" }, ""),
      el("td", { class: "write" }, writable ? writeControl(name, p, bool) : el("span", { class: "note" }, "read only")));
  });
  const card = el("div", { class: "card device", "data-device": name },
    el("h2", {}, name, " ", el("span", { class: "state off" }, "…")),
    el("p", { class: "devline" }, d.tcp ? "Modbus TCP " + d.tcp.address : "Modbus RTU " + (d.rtu ? d.rtu.port : ""), ", unit ", String(d.unit_id ?? 0), ", ", String((d.points || []).length), " points", el("span", { class: "err deverr" })),
    el("p", { class: "stats note" }, ""),
    el("div", { class: "row" },
      el("button", { class: "small", onclick: () => readNow(name) }, "Read now"),
      el("button", { class: "small secondary", onclick: () => editDevice(i) }, "Edit"),
      el("a", { class: "button small secondary", href: `api/v1/southbound/devices/${encodeURIComponent(name)}/tags.csv`, download: name + "-tags.csv" }, "Export CSV"),
      el("button", { class: "small secondary", onclick: () => openImport(name) }, "Import CSV"),
      el("button", { class: "small secondary", onclick: () => saveTemplate(name) }, "Save as template"),
      el("button", { class: "small danger", onclick: () => removeDevice(i) }, "Remove")),
    el("div", { class: "row" }, el("label", { class: "grow" }, "Search points ", search), el("label", { class: "check" }, onlyBad, " only bad points")),
    el("p", { class: "readmsg note", role: "status" }),
    el("div", { class: "scroll" }, el("table", { class: "stack tags", id: "tags-" + name },
      el("thead", {}, el("tr", {}, ...["Point", "Address", "Value", "Quality", "Unit", "Updated", "Last error", "Raw", "Write"].map(h => el("th", {}, h)))),
      el("tbody", {}, ...rows))),
    more);
  card.filter = filter;
  filter();
  return card;
}

// updatePoint shows one value in its row (from the live stream or a read).
function updatePoint(device, point, u) {
  const st = ((sbState[device] = sbState[device] || {})[point] = Object.assign((sbState[device] || {})[point] || {}, u));
  const card = $(`#sb-devices [data-device="${CSS.escape(device)}"]`);
  const tr = card && $(`tr[data-point="${CSS.escape(point)}"]`, card);
  if (!tr) return;
  const bad = st.q && st.q !== "good";
  $(".value", tr).textContent = fmtValue(st.v) + (st.unit && st.v !== null && st.v !== undefined && typeof st.v !== "boolean" ? " " + st.unit : "");
  $(".quality", tr).textContent = st.q || "—";
  $(".quality", tr).className = "quality " + (bad ? "off" : st.q ? "on" : "");
  $(".time", tr).textContent = st.ts ? new Date(st.ts).toLocaleTimeString() : "—";
  $(".lasterr", tr).textContent = st.err || "";
  if (st.raw) $(".raw", tr).textContent = st.raw.map(x => "0x" + x.toString(16).padStart(4, "0")).join(" ");
  tr.dataset.bad = bad || st.err ? "1" : "0";
  tr.classList.toggle("bad", !!(bad || st.err));
  const tog = $("button.toggle", tr);
  if (tog) { tog.setAttribute("aria-pressed", st.v ? "true" : "false"); tog.textContent = st.v ? "On — turn off" : "Off — turn on"; }
  if (card.filter) card.filter();
}

// onSouthboundMessages feeds the live stream into the tag tables:
// {prefix}/{device}/{point} with {"v", "q", "unit", "ts"}, or a poll group's
// {"ts", "values": {point: {"v", "q"}}}, and {prefix}/{device}/status.
function onSouthboundMessages(msgs) {
  const pre = prefix() + "/";
  for (const m of msgs) {
    if (!m.topic.startsWith(pre) || m.text === undefined) continue;
    const parts = m.topic.slice(pre.length).split("/");
    if (parts.length !== 2) continue;
    let body;
    try { body = JSON.parse(m.text); } catch { continue; }
    const [device, point] = parts;
    if (body.values && typeof body.values === "object") {
      for (const [n, x] of Object.entries(body.values)) updatePoint(device, n, { v: x.v, q: x.q, ts: body.ts, err: x.q === "good" ? "" : undefined });
    } else if ("v" in body) {
      updatePoint(device, point, { v: body.v, q: body.q, unit: body.unit, ts: body.ts, err: body.q === "good" ? "" : undefined });
    }
  }
}

function startSouthboundLive() {
  if (sbLive) sbLive.close();
  const src = new EventSource("api/v1/live?filter=" + encodeURIComponent(prefix() + "/#"));
  sbLive = src;
  src.addEventListener("messages", ev => onSouthboundMessages(JSON.parse(ev.data).messages || []));
  src.onerror = () => {
    // A closed stream (refused, session gone) is opened again while the page shows.
    if (src.readyState === EventSource.CLOSED && sbLive === src) setTimeout(() => { if (sbLive === src && !$("#p-southbound").hidden) startSouthboundLive(); }, 3000);
  };
}

// loadSouthbound shows the device cards. It closes the forms at once (not
// after the config arrives, which would close one opened meanwhile);
// after a save (keepForms) the import result stays.
async function loadSouthbound(keepForms) {
  if (!keepForms) { $("#dev-form").hidden = true; $("#tpl-form").hidden = true; $("#import").hidden = true; }
  await loadConfig();
  const m = modbus();
  $("#sb-missing").hidden = !!m;
  $("#sb-add").hidden = !m;
  if (!m) return;
  $("#sb-devices").replaceChildren(...(m.devices || []).map(deviceCard));
  for (const [dev, pts] of Object.entries(sbState)) for (const [p, u] of Object.entries(pts)) updatePoint(dev, p, u);
  stopPolling(); // a reload after a save replaces the stream and the poll
  startSouthboundLive();
  for (const d of m.devices || []) readNow(d.name, true);
  poll(async () => {
    const status = await api("GET", "status");
    const byName = Object.fromEntries((status.devices || []).map(d => [d.name, d]));
    for (const card of $$("#sb-devices [data-device]")) {
      const st = byName[card.dataset.device] || {};
      const badge = $(".state", card);
      badge.className = "state " + (st.online ? "on" : "off");
      badge.textContent = st.online ? "online" : "offline";
      $(".deverr", card).textContent = st.last_error ? " — " + st.last_error : "";
      const x = st.stats;
      if (x) {
        const errs = Object.entries(x.errors || {}).filter(([, n]) => n).map(([k, n]) => `${k} ${n}`).join(", ");
        $(".stats", card).textContent = `Round trip p50 ${num(x.round_trip_p50_ms)} ms, p99 ${num(x.round_trip_p99_ms)} ms · ${x.polls} polls (${x.failed_polls} failed) · ${x.requests} requests · errors: ${errs || "none"}` + (x.writes || x.write_errors ? ` · ${x.writes} writes (${x.write_errors} failed)` : "");
      }
    }
  }, 2000);
}

// readNow reads every point of a device once and shows the values, raw
// registers and errors in its rows.
async function readNow(name, quiet) {
  const card = $(`#sb-devices [data-device="${CSS.escape(name)}"]`);
  const msg = card && $(".readmsg", card);
  if (msg && !quiet) { msg.className = "readmsg note"; msg.textContent = "Reading…"; }
  try {
    const r = await api("POST", `southbound/devices/${encodeURIComponent(name)}/read`);
    for (const p of r.points || []) updatePoint(name, p.name, { v: p.error ? null : p.value, q: p.error ? "bad" : "good", ts: r.time, err: p.error || "", raw: p.raw || [], unit: p.unit });
    if (msg) msg.textContent = "Read at " + new Date(r.time).toLocaleTimeString() + ".";
  } catch (e) { if (msg) { msg.className = "readmsg err"; msg.textContent = "Read failed: " + e.message; } }
}

// writeControl is a row's write: an on/off switch for a bit, else a value
// field (a decimal comma is fine). The row is read again after a write.
function writeControl(dev, p, bool) {
  const msg = el("span", { role: "status", class: "wmsg" });
  const send = async v => {
    msg.className = "wmsg note"; msg.textContent = "writing…";
    try {
      await api("POST", `southbound/devices/${encodeURIComponent(dev)}/points/${encodeURIComponent(p.name)}/write`, { value: v });
      msg.className = "wmsg ok"; msg.textContent = "written";
      await readNow(dev, true);
    } catch (e) { msg.className = "wmsg err"; msg.textContent = e.message; }
  };
  if (bool) {
    const b = el("button", { type: "button", class: "small toggle", "aria-pressed": "false", "aria-label": "switch " + p.name, onclick: () => send(b.getAttribute("aria-pressed") !== "true") }, "Off — turn on");
    return el("div", { class: "row" }, b, msg);
  }
  const input = el("input", { name: "value", "aria-label": "new value for " + p.name, inputmode: "decimal", autocomplete: "off" });
  return el("form", { class: "row", onsubmit: ev => {
    ev.preventDefault();
    let v = input.value.trim();
    if (/^-?\d+(,\d+)?$/.test(v)) v = v.replace(",", ".");
    if (v === "true" || v === "false") v = v === "true"; else if (v !== "" && !isNaN(+v)) v = +v;
    if (v === "") { msg.className = "wmsg err"; msg.textContent = "type a value first"; return; }
    send(v);
  } }, input, el("button", { class: "small" }, "Write"), msg);
}

let editing = -1;
async function editDevice(i) {
  editing = i;
  const d = i >= 0 ? modbus().devices[i] : { unit_id: 1, points: [] };
  const f = $("#dev-form");
  f.hidden = false; showErrors(f); $("#probe-result").replaceChildren();
  $("#dev-title").textContent = i >= 0 ? "Edit " + d.name : "New Modbus device";
  f.device.value = d.name || "";
  f.conn.value = d.rtu ? "rtu" : "tcp";
  f["tcp.address"].value = d.tcp ? d.tcp.address : "";
  let ports = [];
  try { ports = (await api("GET", "southbound/serial-ports")).ports; } catch { }
  const cur = d.rtu ? d.rtu.port : "";
  f["rtu.port"].replaceChildren(...ports.map(p => el("option", { value: p.path, selected: p.path === cur }, p.path + (p.description ? " — " + p.description : ""))));
  if (cur && !ports.some(p => p.path === cur)) f["rtu.port"].append(el("option", { value: cur, selected: true }, cur + " (not present)"));
  f["rtu.baud"].value = d.rtu ? d.rtu.baud || 9600 : 9600;
  f["rtu.parity"].value = d.rtu ? d.rtu.parity || "E" : "E";
  f.unit_id.value = d.unit_id ?? 1;
  f.interval.value = (d.poll_groups && d.poll_groups[0] && d.poll_groups[0].interval) || "1s";
  $("#points tbody").replaceChildren(...(d.points || []).map(pointRow));
  if (!(d.points || []).length) $("#points tbody").append(pointRow());
  connChanged();
  f.scrollIntoView({ behavior: "smooth" });
}

function connChanged() {
  const c = $("#dev-form").conn.value;
  for (const e of $$("#dev-form [data-conn]")) e.hidden = e.dataset.conn !== c;
}
$("#dev-form").conn.addEventListener("change", connChanged);
$("#sb-add").addEventListener("click", () => editDevice(-1));
$("#add-point").addEventListener("click", () => $("#points tbody").append(pointRow()));
$("#dev-cancel").addEventListener("click", () => { $("#dev-form").hidden = true; });

// deviceField maps a config path of the device being edited to its input.
function deviceField(path) {
  const m = path.match(/devices\[(\d+)\](?:\.(.*))?$/);
  if (!m) return null;
  const rest = m[2] || "";
  const f = $("#dev-form");
  const p = rest.match(/^points\[(\d+)\]\.?(\w*)/);
  if (p) {
    const tr = $$("#points tbody tr")[+p[1]];
    const name = tr ? $("[name=name]", tr).value || "#" + (+p[1] + 1) : "#" + (+p[1] + 1);
    const key = { register: "ref", address: "ref", byte_order: "byte_order" }[p[2]] || p[2];
    return { input: tr && ($(`[name=${key}]`, tr) || $("[name=name]", tr)), words: `Point ${name}` + (p[2] ? ", " + p[2].replace("_", " ") : "") };
  }
  const map = { name: "device", "tcp.address": "tcp.address", "tcp": "tcp.address", unit_id: "unit_id", "rtu.port": "rtu.port", "rtu.baud": "rtu.baud", "rtu.parity": "rtu.parity", poll_groups: "interval" };
  const key = Object.keys(map).find(k => rest === k || rest.startsWith(k + ".") || rest.startsWith(k + "["));
  const words = { device: "Name", "tcp.address": "Address", unit_id: "Unit id", "rtu.port": "Serial port", "rtu.baud": "Baud", "rtu.parity": "Parity", interval: "Poll interval" };
  return key ? { input: f[map[key]], words: words[map[key]] } : { input: null, words: "Device " + (f.device.value || "") + (rest ? ", " + rest : "") };
}

// checkDevice names, in words, what is wrong in the form before it is sent.
function checkDevice(f, idx) {
  const bad = [], path = `southbound.modbus.devices[${idx}]`;
  if (!/^[A-Za-z0-9._-]+$/.test(f.device.value)) bad.push({ field: path + ".name", error: "use letters, digits, '.', '_' or '-' (no spaces)" });
  if (f.conn.value === "tcp") {
    const a = f["tcp.address"].value.trim(), m = a.match(/^(.+):(\d+)$/);
    if (!m) bad.push({ field: path + ".tcp.address", error: "write it as host:port, e.g. 192.168.1.50:502" });
    else if (/^[\d.]+$/.test(m[1]) && (m[1].split(".").length !== 4 || m[1].split(".").some(x => x === "" || +x > 255))) bad.push({ field: path + ".tcp.address", error: `${m[1]} is not an IPv4 address (four numbers 0–255)` });
    else if (+m[2] < 1 || +m[2] > 65535) bad.push({ field: path + ".tcp.address", error: "the port must be 1–65535" });
  }
  const u = +f.unit_id.value;
  if (!/^\d+$/.test(f.unit_id.value.trim()) || u > 255) bad.push({ field: path + ".unit_id", error: "a number 0–255 (1–247 on a serial line)" });
  if (!/^\d+(\.\d+)?(ms|s|m|h)$/.test(f.interval.value.trim())) bad.push({ field: path + ".poll_groups[0].interval", error: "a duration such as 500ms, 1s or 1m" });
  const seen = new Set();
  $$("#points tbody tr").forEach((tr, i) => {
    const v = n => $(`[name=${n}]`, tr).value.trim(), pp = `${path}.points[${i}]`;
    if (!v("name")) bad.push({ field: pp + ".name", error: "give the point a name (it becomes the topic's last level)" });
    else if (seen.has(v("name"))) bad.push({ field: pp + ".name", error: "another point has this name" });
    seen.add(v("name"));
    if (v("ref") && !parseRef(v("ref"))) bad.push({ field: pp + ".register", error: `"${v("ref")}" is not an address as manuals print it (40001, 30001, 10001, 00001)` });
    if (!/^\d+$/.test(v("address")) || +v("address") > 65535) bad.push({ field: pp + ".address", error: "the offset is a number 0–65535" });
    const t = v("type"), r = v("register");
    if (bitRegister(r) && t !== "BOOL") bad.push({ field: pp + ".type", error: `a ${registerWords[r]} holds one bit: choose BOOL, not ${t}` });
    if (!bitRegister(r) && t === "BOOL") bad.push({ field: pp + ".type", error: `a ${registerWords[r]} holds 16 bits: choose BIT and a bit number, or a number type` });
    if (t === "BIT" && !(/^\d+$/.test(v("bit")) && +v("bit") <= 15)) bad.push({ field: pp + ".bit", error: "the bit is 0–15 (0 = least significant)" });
    const sc = v("scale").replace(",", ".");
    if (sc === "" || isNaN(+sc) || +sc === 0) bad.push({ field: pp + ".scale", error: "a number other than 0, e.g. 1 or 0.1 (a decimal comma is fine)" });
    if ($("[name=writable]", tr).checked && (r === "input" || r === "discrete")) bad.push({ field: pp + ".writable", error: `a ${registerWords[r]} cannot be written; only coils and holding registers can` });
  });
  return bad;
}

async function saveModbus(m, form, fieldFor) {
  try { if (form) showErrors(form); restartNote(await api("PUT", "config/southbound.modbus", m)); await loadSouthbound(); return true; }
  catch (e) { if (form) showErrors(form, e, fieldFor); else banner(e.message); return false; }
}

// deviceSection is the Modbus section with the form's device in it, as it
// would be saved; it throws the form's errors, in words.
function deviceSection(f) {
  const m = structuredClone(modbus());
  m.devices = m.devices || [];
  const idx = editing >= 0 ? editing : m.devices.length;
  const bad = checkDevice(f, idx);
  if (bad.length) throw clientError(bad);
  const old = editing >= 0 ? m.devices[editing] : {};
  const d = Object.assign({}, old, { name: f.device.value.trim(), unit_id: +f.unit_id.value });
  delete d.tcp; delete d.rtu;
  if (f.conn.value === "tcp") d.tcp = { address: f["tcp.address"].value.trim() };
  else d.rtu = Object.assign({}, old.rtu, { port: f["rtu.port"].value, baud: +f["rtu.baud"].value, parity: f["rtu.parity"].value });
  const groups = (old.poll_groups && old.poll_groups.length) ? structuredClone(old.poll_groups) : [{ name: "default" }];
  groups[0].interval = f.interval.value.trim();
  d.poll_groups = groups;
  const oldPoints = Object.fromEntries((old.points || []).map(p => [p.name, p]));
  d.points = $$("#points tbody tr").map(tr => {
    const v = n => $(`[name=${n}]`, tr);
    const p = Object.assign({}, oldPoints[v("name").value.trim()] || {}, { name: v("name").value.trim(), register: v("register").value, address: +v("address").value, type: v("type").value, byte_order: v("byte_order").value, scale: +v("scale").value.replace(",", "."), unit: v("unit").value, writable: v("writable").checked });
    delete p.ref;
    if (p.type === "BIT") p.bit = +v("bit").value; else delete p.bit;
    if (bitRegister(p.register) || p.type === "BIT") delete p.byte_order;
    return p;
  });
  if (editing >= 0) m.devices[editing] = d; else m.devices.push(d);
  return { m, d };
}

$("#dev-form").addEventListener("submit", async ev => {
  ev.preventDefault();
  const f = ev.target;
  let sec;
  try { sec = deviceSection(f); } catch (e) { showErrors(f, e, deviceField); return; }
  await saveModbus(sec.m, f, deviceField);
});

// "Read before save": the device as typed is read once; nothing is saved.
$("#dev-probe").addEventListener("click", async () => {
  const f = $("#dev-form"), out = $("#probe-result");
  let sec;
  try { showErrors(f); sec = deviceSection(f); } catch (e) { showErrors(f, e, deviceField); return; }
  out.replaceChildren(el("p", { class: "note" }, "Reading " + sec.d.name + "… (nothing is saved)"));
  try {
    const r = await api("POST", "southbound/probe", { device: sec.d.name, modbus: sec.m });
    out.replaceChildren(el("p", { class: "ok" }, `Read at ${new Date(r.time).toLocaleTimeString()}: the device answers. Not saved yet.`),
      el("div", { class: "scroll" }, el("table", { class: "stack", id: "probe-table" },
        el("thead", {}, el("tr", {}, el("th", {}, "Point"), el("th", {}, "Value"), el("th", {}, "Raw"), el("th", {}, "Error"))),
        el("tbody", {}, ...(r.points || []).map(p => el("tr", { "data-point": p.name }, el("td", {}, p.name),
          el("td", { class: "value" }, p.error ? "—" : fmtValue(p.value) + (p.unit ? " " + p.unit : "")),
          el("td", {}, (p.raw || []).map(x => "0x" + x.toString(16).padStart(4, "0")).join(" ")),
          el("td", { class: "err" }, p.error || "")))))));
  } catch (e) {
    out.replaceChildren();
    if (e.body && e.body.fields) showErrors(f, e, deviceField);
    else out.append(el("p", { class: "err" }, "Read failed: " + e.message));
  }
});

async function removeDevice(i) {
  const m = structuredClone(modbus());
  if (!confirm("Remove device " + m.devices[i].name + "? Its points stop being read.")) return;
  m.devices.splice(i, 1);
  await saveModbus(m);
}

// ---- tag import (CSV with a dry run), templates ----

let importDevice = "";
function openImport(name) {
  importDevice = name;
  const box = $("#import");
  box.hidden = false;
  $("#import-title").textContent = "Import tags into " + name;
  $("#import-form").reset();
  $("#import-result").replaceChildren();
  $("#import-apply").hidden = true;
  box.scrollIntoView({ behavior: "smooth" });
}

async function runImport(dry) {
  const f = $("#import-form"), out = $("#import-result"), file = f.file.files[0];
  if (!file) { out.replaceChildren(el("p", { class: "err" }, "Choose a CSV file first.")); return; }
  out.replaceChildren(el("p", { class: "note" }, dry ? "Checking…" : "Applying…"));
  try {
    const r = await api("POST", `southbound/devices/${encodeURIComponent(importDevice)}/tags?mode=${f.mode.value}${dry ? "&dry_run=1" : ""}`, await file.text(), "text/csv");
    const errs = r.errors || [];
    const bad = new Set(errs.map(e => e.line)).size;
    const good = r.points ?? (r.rows - bad);
    out.replaceChildren(
      el("p", { class: errs.length ? "err" : "ok", id: "import-summary" }, dry
        ? `${r.rows} rows: ${good} good` + (errs.length ? `, ${bad} with errors (listed below; they are left out).` : ".")
        : `Applied: ${good} points imported` + (errs.length ? `, ${bad} rows left out (listed below).` : ".")),
      errs.length ? el("div", { class: "scroll" }, el("table", { class: "stack", id: "import-errors" },
        el("thead", {}, el("tr", {}, el("th", {}, "Line"), el("th", {}, "Column"), el("th", {}, "Error"))),
        el("tbody", {}, ...errs.map(e => el("tr", { "data-line": e.line }, el("td", {}, String(e.line)), el("td", {}, e.column || ""), el("td", {}, e.error)))))) : null);
    $("#import-apply").hidden = !dry || good === 0;
    $("#import-apply").textContent = `Apply the ${good} good rows`;
    if (!dry) { restartNote(r); await loadSouthbound(true); }
  } catch (e) {
    $("#import-apply").hidden = true;
    out.replaceChildren(el("p", { class: "err" }, "The file was not accepted: " + e.message));
  }
}
$("#import-form").addEventListener("submit", ev => { ev.preventDefault(); runImport(true); });
$("#import-apply").addEventListener("click", () => runImport(false));
$("#import-close").addEventListener("click", () => { $("#import").hidden = true; });

async function saveTemplate(name) {
  const t = prompt("Save the points of " + name + " as a template named:", name + "-template");
  if (!t) return;
  try { await api("POST", "southbound/templates", { name: t, description: "saved from device " + name, device: name }); banner("Template " + t + " saved."); }
  catch (e) { banner("Template not saved: " + e.message); }
}

let templates = [];
async function openTemplateForm() {
  const f = $("#tpl-form");
  f.hidden = false; showErrors(f); f.reset();
  templates = (await api("GET", "southbound/templates")).templates || [];
  f.template.replaceChildren(...templates.map(t => el("option", { value: t.name }, t.name + (t.built_in ? " (built in)" : "") + " — " + (t.points || 0) + " points")));
  tplChanged();
  f.scrollIntoView({ behavior: "smooth" });
}
function tplChanged() {
  const f = $("#tpl-form"), t = templates.find(x => x.name === f.template.value) || {};
  $("#tpl-about").textContent = (t.description || "") + (t.source ? " Source: " + t.source : "");
  for (const e of $$("[data-tpl]", f)) e.hidden = (e.dataset.tpl === "rtu") !== !!t.serial;
  f.unit_id.value = t.unit_id || 1;
}
$("#tpl-form").template.addEventListener("change", tplChanged);
$("#sb-from-template").addEventListener("click", () => openTemplateForm().catch(e => banner(e.message)));
$("#tpl-cancel").addEventListener("click", () => { $("#tpl-form").hidden = true; });
$("#tpl-form").addEventListener("submit", async ev => {
  ev.preventDefault();
  const f = ev.target, t = templates.find(x => x.name === f.template.value) || {};
  const body = { name: f.name.value.trim(), unit_id: +f.unit_id.value };
  if (t.serial) body.port = f.port.value.trim(); else body.address = f.address.value.trim();
  const bad = [];
  if (!/^[A-Za-z0-9._-]+$/.test(body.name)) bad.push({ field: "name", error: "use letters, digits, '.', '_' or '-'" });
  if (!t.serial && !body.address) bad.push({ field: "address", error: "type the device's IP address" });
  const fieldFor = p => { const k = p.replace(/^.*\./, ""); const input = f[k] || f[{ tcp: "address" }[k]]; return input ? { input, words: input.closest("label").firstChild.textContent.trim() } : null; };
  if (bad.length) { showErrors(f, clientError(bad), fieldFor); return; }
  try { showErrors(f); restartNote(await api("POST", `southbound/templates/${encodeURIComponent(f.template.value)}/devices`, body)); await loadSouthbound(); }
  catch (e) { showErrors(f, e, fieldFor); }
});

// ---- broker ----

const aclFields = [
  { key: "username", label: "User", ph: "(any)" },
  { key: "client_id", label: "Client id", ph: "(any)" },
  { key: "topic", label: "Topic filter", ph: "plant/#", required: "say which topics the rule is about" },
  { key: "action", label: "Action", options: [["all", "publish and subscribe"], ["publish", "publish"], ["subscribe", "subscribe"]], def: "all" },
  { key: "permission", label: "Permission", options: [["allow", "allow"], ["deny", "deny"]], def: "allow" }];

// limitHelp says what each broker limit is, in words (0 means none where
// the gateway allows it).
const limitHelp = {
  max_packet_size: ["Largest packet", "bytes a client may send in one packet"],
  max_connections: ["Connections", "clients connected at once"],
  max_connections_per_address: ["Connections per address", "from one IP address (0: no limit)"],
  receive_maximum: ["Receive maximum", "QoS 1/2 messages a client may have unacknowledged"],
  max_inflight: ["In flight", "QoS 1/2 messages sent to a client, not yet acknowledged"],
  max_queued: ["Queued messages", "per offline or slow client"],
  max_queued_bytes: ["Queued bytes", "per offline or slow client"],
  publish_rate: ["Publish rate", "messages per second per client (0: no limit)"],
  publish_burst: ["Publish burst", "messages a client may send at once above the rate"],
  publish_rate_grace: ["Rate grace", "how long a client may stay above the rate (10s, 1m)"],
  connect_rate: ["Connect rate", "new connections per second (0: no limit)"],
  connect_burst: ["Connect burst", "connections at once above the rate"],
  max_topic_levels: ["Topic levels", "levels in one topic (a/b/c is 3)"],
  max_topic_length: ["Topic length", "bytes in one topic"],
  max_keepalive: ["Longest keep-alive", "a client asking for more gets this (e.g. 10m)"],
};
const words = k => (limitHelp[k] || [k.replace(/_/g, " ")])[0];

function limitsForm(limits) {
  return Object.entries(limits || {}).map(([k, v]) => {
    const isNum = typeof v === "number";
    const input = el("input", { name: "limits." + k, value: isNum ? num(v) : String(v), inputmode: isNum ? "decimal" : undefined, autocomplete: "off", "data-kind": typeof v });
    return el("div", { class: "field" }, el("label", {}, words(k), " ", input), el("p", { class: "hint" }, (limitHelp[k] || ["", ""])[1]));
  });
}

function brokerField(path) {
  let m = path.match(/^broker\.acl\[(\d+)\]\.(\w+)/);
  if (m) return ruleField($("#acl-rules"), aclFields, "Access rule", +m[1], m[2]);
  m = path.match(/^broker\.limits\.(\w+)/);
  if (m) return { input: $(`#adv-form [name="limits.${m[1]}"]`), words: "Limit \"" + words(m[1]) + "\"" };
  m = path.match(/^broker\.banned\.(\w+)/);
  if (m) return { input: $(`#adv-form [name="banned.${m[1]}"]`), words: "Banned " + m[1].replace("_", " ") };
  m = path.match(/^broker\.listeners\.(\w+)\.(\w+)/);
  if (m) return { input: $(`#listeners [data-listener=${m[1]}] [name=${m[2]}]`), words: `Listener ${m[1]}, ${m[2]}` };
  return null;
}

async function loadBroker() {
  await loadConfig();
  const b = cfg.broker;
  $("#listeners tbody").replaceChildren(...Object.entries(b.listeners).filter(([, l]) => l && typeof l === "object").map(([k, l]) => el("tr", { "data-listener": k },
    el("td", {}, k), el("td", {}, el("label", { class: "check" }, el("input", { type: "checkbox", name: "enabled", checked: !!l.enabled }), " on")),
    el("td", {}, el("input", { name: "address", value: l.address || "", "aria-label": k + " listener address (host:port, :port for all interfaces)", autocomplete: "off" })))));
  $("#anon").checked = !!b.auth.allow_anonymous;
  $("#users tbody").replaceChildren(...(b.auth.users || []).map(u => el("tr", {}, el("td", {}, u.username),
    el("td", {}, el("button", { class: "small danger", onclick: async () => {
      if (!confirm("Delete the broker user " + u.username + "? Clients logging in as it are refused from now on.")) return;
      try { restartNote(await api("DELETE", "broker/users/" + encodeURIComponent(u.username))); loadBroker(); } catch (e) { showErrors($("#user-errs"), e); }
    } }, "Delete")))));
  $("#acl-rules").replaceChildren(...(b.acl || []).map(r => ruleRow(aclFields, r)));
  $("#limits").replaceChildren(...limitsForm(b.limits));
  const f = $("#adv-form"), ban = b.banned || {};
  for (const k of ["client_ids", "usernames", "cidrs"]) f["banned." + k].value = (ban[k] || []).join("\n");
  showErrors(f);
  poll(async () => {
    const r = await api("GET", "clients");
    $("#clients tbody").replaceChildren(...r.clients.map(c => el("tr", {}, el("td", {}, c.id), el("td", {}, c.username || ""), el("td", {}, c.listener), el("td", {}, c.remote),
      el("td", {}, el("button", { class: "small danger", onclick: async () => { await api("DELETE", "clients/" + encodeURIComponent(c.id)); } }, "Disconnect")))));
    if (!r.clients.length) $("#clients tbody").append(el("tr", {}, el("td", { colspan: 5, class: "note" }, "No client is connected.")));
  }, 3000);
}

async function saveBroker(change, form) {
  const b = structuredClone(cfg.broker);
  try { change(b); showErrors(form); restartNote(await api("PUT", "config/broker", b)); await loadConfig(); }
  catch (e) { showErrors(form, e instanceof APIError || e.fields ? e : { message: e.message }, brokerField); }
}
$("#listeners-form").addEventListener("submit", ev => {
  ev.preventDefault();
  saveBroker(b => { for (const tr of $$("#listeners tbody tr")) { const l = b.listeners[tr.dataset.listener]; l.enabled = $("[name=enabled]", tr).checked; l.address = $("[name=address]", tr).value.trim(); } }, ev.target);
});
$("#anon").addEventListener("change", ev => saveBroker(b => { b.auth.allow_anonymous = ev.target.checked; }, $("#user-errs")));
$("#user-form").addEventListener("submit", async ev => {
  ev.preventDefault();
  const f = ev.target;
  try { showErrors($("#user-errs")); restartNote(await api("PUT", "broker/users/" + encodeURIComponent(f.username.value.trim()), { password: f.password.value })); f.reset(); loadBroker(); }
  catch (e) { showErrors($("#user-errs"), e); }
});
$("#add-acl").addEventListener("click", () => $("#acl-rules").append(ruleRow(aclFields, {})));
$("#adv-form").addEventListener("submit", ev => {
  ev.preventDefault();
  const f = ev.target;
  saveBroker(b => {
    const bad = checkRules($("#acl-rules"), aclFields, "Access rule", "broker.acl");
    const limits = {};
    for (const input of $$("#limits input")) {
      const k = input.name.slice(7), v = input.value.trim().replace(",", ".");
      if (input.dataset.kind === "number") {
        if (v === "" || isNaN(+v) || +v < 0) bad.push({ field: "broker.limits." + k, error: "a number, 0 or more" });
        limits[k] = +v;
      } else limits[k] = v;
    }
    const lines = k => f["banned." + k].value.split("\n").map(x => x.trim()).filter(Boolean);
    const cidrs = lines("cidrs");
    cidrs.forEach(c => { if (!/^[\d.]+\/\d{1,2}$|^[0-9a-fA-F:]+\/\d{1,3}$/.test(c)) bad.push({ field: "broker.banned.cidrs", error: `"${c}" is not a network such as 10.9.0.0/16` }); });
    if (bad.length) throw clientError(bad);
    b.acl = readRules($("#acl-rules"), aclFields);
    b.limits = Object.assign({}, b.limits, limits);
    b.banned = { client_ids: lines("client_ids"), usernames: lines("usernames"), cidrs };
  }, f);
});

// ---- live messages ----

let live = null, paused = false, shown = 0;
const maxShown = 500;

function hexdump(bytes) {
  let out = "";
  for (let i = 0; i < bytes.length; i += 16) {
    const row = bytes.slice(i, i + 16);
    out += i.toString(16).padStart(6, "0") + "  " + [...row].map(b => b.toString(16).padStart(2, "0")).join(" ").padEnd(48) + "  " + [...row].map(b => b >= 32 && b < 127 ? String.fromCharCode(b) : ".").join("") + "\n";
  }
  return out;
}

function viewMessage(m, li) {
  $$("#live-list li.sel").forEach(x => x.classList.remove("sel"));
  li.classList.add("sel");
  let body;
  if (m.text !== undefined) {
    try { body = JSON.stringify(JSON.parse(m.text), null, 2); } catch { body = m.text; }
  } else {
    body = hexdump(Uint8Array.from(atob(m.base64 || ""), c => c.charCodeAt(0)));
  }
  $("#live-view").textContent = `${m.topic}\nQoS ${m.qos}${m.retain ? ", retained" : ""}, ${m.size} bytes${m.truncated ? " (truncated)" : ""}, from ${m.origin || "?"} at ${new Date(m.time).toLocaleTimeString()}\n\n${body}`;
}

let liveFilter = "";
function startLive(filter) {
  if (live) live.close();
  if (filter !== liveFilter) {
    // A new filter starts a new list: nothing of the previous one stays.
    $("#live-list").replaceChildren(); shown = 0;
    $("#live-view").textContent = "Select a message to see its payload.";
    liveFilter = filter;
  }
  paused = false; $("#live-pause").textContent = "Pause";
  const src = new EventSource("api/v1/live?filter=" + encodeURIComponent(filter));
  live = src;
  $("#live-state").textContent = "Connecting…";
  src.onopen = () => { $("#live-state").textContent = "Watching " + filter; };
  src.addEventListener("messages", ev => {
    const b = JSON.parse(ev.data);
    if (b.dropped) $("#live-state").textContent = `Watching ${filter} — ${b.dropped} messages not shown (too many)`;
    if (paused) return;
    const list = $("#live-list"), internal = $("#live-form").internal.checked;
    for (const m of b.messages) {
      if (!internal && m.topic.startsWith("$fieldgate/")) continue;
      const li = el("li", { title: m.topic }, new Date(m.time).toLocaleTimeString() + "  " + m.topic + "  " + (m.text !== undefined ? m.text.slice(0, 80) : "<" + m.size + " bytes>"));
      li.addEventListener("click", () => viewMessage(m, li));
      list.prepend(li);
      if (++shown > maxShown) { list.lastChild.remove(); shown--; }
    }
  });
  src.onerror = () => {
    $("#live-state").textContent = "Disconnected; retrying…";
    // The browser retries a dropped stream by itself, but not one that was
    // refused (a restart ended the session, too many streams): open it again.
    if (src.readyState === EventSource.CLOSED && live === src) setTimeout(() => { if (live === src && !$("#p-live").hidden) startLive(filter); }, 3000);
  };
}

async function loadLive() { startLive($("#live-form").filter.value); }
$("#live-form").addEventListener("submit", ev => { ev.preventDefault(); startLive(ev.target.filter.value); });
$("#live-pause").addEventListener("click", ev => { paused = !paused; ev.target.textContent = paused ? "Resume" : "Pause"; });
$("#live-clear").addEventListener("click", () => { $("#live-list").replaceChildren(); shown = 0; });
$("#pub-form").addEventListener("submit", async ev => {
  ev.preventDefault();
  const f = ev.target, ok = $(".ok", f);
  ok.textContent = "";
  const fieldFor = k => f[k] ? { input: f[k], words: { topic: "Topic", payload: "Payload", qos: "QoS" }[k] } : null;
  if (!f.topic.value.trim() || /[+#]/.test(f.topic.value)) { showErrors(f, clientError([{ field: "topic", error: "type a topic without wildcards, e.g. plant/line1/test" }]), fieldFor); return; }
  try {
    showErrors(f);
    await api("POST", "publish", { topic: f.topic.value.trim(), payload: f.payload.value, qos: +f.qos.value, retain: f.retain.checked });
    ok.textContent = "Published at " + new Date().toLocaleTimeString() + ".";
  } catch (e) { showErrors(f, e, fieldFor); }
});

// ---- config ----

// lineDiff lists the lines of a that b drops ("-") and the lines b adds
// ("+"), in order, with a longest common subsequence (config files are a
// few hundred lines).
function lineDiff(a, b) {
  a = a.split("\n"); b = b.split("\n");
  const n = a.length, m = b.length, L = Array.from({ length: n + 1 }, () => new Uint16Array(m + 1));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) L[i][j] = a[i] === b[j] ? L[i + 1][j + 1] + 1 : Math.max(L[i + 1][j], L[i][j + 1]);
  const out = [];
  let i = 0, j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && a[i] === b[j]) { i++; j++; }
    else if (j < m && (i === n || L[i][j + 1] >= L[i + 1][j])) out.push("+ " + b[j++]);
    else out.push("- " + a[i++]);
  }
  return out;
}

// The upload is checked first and its changes shown; "Apply" sends it.
let uploadText = null;
$("#upload-form").addEventListener("submit", async ev => {
  ev.preventDefault();
  const f = ev.target, ok = $(".ok", f), diff = $("#upload-diff"), apply = $("#upload-apply");
  ok.textContent = ""; diff.hidden = true; apply.hidden = true; uploadText = null;
  try {
    const text = await f.file.files[0].text();
    showErrors(f);
    await api("PUT", "config?dry_run=1", text, "application/yaml");
    if (f.dry.checked) { ok.textContent = "The config is valid."; return; }
    const r = await fetchT("api/v1/config.yaml", { credentials: "same-origin" });
    const changes = lineDiff((await r.text()).trim(), text.trim());
    ok.textContent = changes.length ? `The config is valid. ${changes.length} lines differ from the saved one (secrets shown as <redacted> stay as they are):` : "The config is valid and the same as the saved one.";
    diff.textContent = changes.slice(0, 400).join("\n") + (changes.length > 400 ? "\n…" : "");
    diff.hidden = !changes.length;
    apply.hidden = !changes.length;
    uploadText = text;
  } catch (e) { showErrors(f, e, key => ({ input: null, key })); }
});
$("#upload-apply").addEventListener("click", async () => {
  const f = $("#upload-form"), ok = $(".ok", f);
  if (uploadText === null) return;
  try {
    showErrors(f);
    const r = await api("PUT", "config", uploadText, "application/yaml");
    ok.textContent = "Applied."; restartNote(r);
    $("#upload-diff").hidden = true; $("#upload-apply").hidden = true; uploadText = null;
  } catch (e) { showErrors(f, e, key => ({ input: null, key })); }
});

async function loadConfigPage() {
  await loadConfig();
  $("#site-form").id.value = cfg.gateway.id || "";
  showErrors($("#site-form"));
}
$("#site-form").addEventListener("submit", async ev => {
  ev.preventDefault();
  const f = ev.target, id = f.id.value.trim();
  const fieldFor = p => /^gateway\.id/.test(p) || p === "id" ? { input: f.id, words: "Site name" } : null;
  if (!/^[A-Za-z0-9._-]+$/.test(id)) { showErrors(f, clientError([{ field: "id", error: "use letters, digits, '.', '_' or '-' (no spaces)" }]), fieldFor); return; }
  try { showErrors(f); restartNote(await api("PUT", "config/gateway", Object.assign({}, cfg.gateway, { id }))); await loadConfig(); }
  catch (e) { showErrors(f, e, fieldFor); }
});

// ---- diagnostics ----

async function loadLogs() {
  const f = $("#logs-form");
  const r = await api("GET", `logs?level=${f.level.value}&part=${encodeURIComponent(f.part.value)}&max=300`);
  $("#logs tbody").replaceChildren(...r.logs.reverse().map(l => el("tr", {}, el("td", {}, new Date(l.time).toLocaleTimeString()), el("td", {}, l.level), el("td", {}, l.part || ""), el("td", {}, l.message + " " + Object.entries(l.attrs || {}).map(([k, v]) => k + "=" + v).join(" ")))));
}
$("#logs-form").addEventListener("submit", ev => { ev.preventDefault(); loadLogs().catch(e => banner(e.message)); });

async function loadTokens() {
  const r = await api("GET", "tokens");
  $("#tokens tbody").replaceChildren(...r.tokens.map(t => el("tr", {}, el("td", {}, t.name), el("td", {}, "scope " + (t.scope || "admin")), el("td", {}, "created " + ago(t.created) + " ago"),
    el("td", {}, el("button", { class: "small danger", onclick: async () => { await api("DELETE", "tokens/" + t.id); loadTokens(); } }, "Delete")))));
}
$("#token-form").addEventListener("submit", async ev => {
  ev.preventDefault();
  const r = await api("POST", "tokens", { name: ev.target.name.value, scope: ev.target.scope.value });
  ev.target.reset();
  const p = $("#new-token"); p.hidden = false; p.textContent = "New token (copy it now, it is not shown again):\n" + r.token;
  loadTokens();
});
$("#pw-form").addEventListener("submit", async ev => {
  ev.preventDefault();
  const f = ev.target;
  try { showErrors(f); const r = await api("POST", "password", { current: f.current.value, new: f.new.value }); csrf = r.csrf; f.reset(); $(".ok", f).textContent = "Password changed; other sessions were logged out."; }
  catch (e) { showErrors(f, e); }
});

async function loadDiagnostics() { await loadLogs(); await loadTokens(); }

const loaders = { overview: loadOverview, uplink: loadUplink, southbound: () => loadSouthbound(), broker: loadBroker, live: loadLive, config: loadConfigPage, diagnostics: loadDiagnostics };

route().catch(e => banner(e.message));
