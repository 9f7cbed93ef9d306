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

class APIError extends Error {
  constructor(status, body) { super(body.error || ("HTTP " + status)); this.status = status; this.body = body; }
}

async function api(method, path, body, raw) {
  const opts = { method, headers: {}, credentials: "same-origin" };
  if (method !== "GET") opts.headers["X-CSRF-Token"] = csrf;
  if (body !== undefined) {
    if (raw) { opts.body = body; opts.headers["Content-Type"] = raw; }
    else { opts.body = JSON.stringify(body); opts.headers["Content-Type"] = "application/json"; }
  }
  const r = await fetch("api/v1/" + path, opts);
  const text = await r.text();
  let data = {};
  try { data = text ? JSON.parse(text) : {}; } catch { data = { error: text }; }
  if (r.status === 401 && !path.startsWith("login") && !path.startsWith("session")) { show("login"); }
  if (!r.ok) throw new APIError(r.status, data);
  return data;
}

// showErrors lists an API error's per-field errors in a form's .errs list.
function showErrors(form, err) {
  const ul = $(".errs", form) || form;
  ul.replaceChildren();
  if (!err) return;
  const fields = (err.body && err.body.fields) || [];
  if (fields.length === 0) ul.append(el("li", {}, err.message));
  for (const f of fields) ul.append(el("li", {}, f.field ? f.field + ": " + f.error : f.error));
}

function banner(text) {
  const b = $("#banner");
  b.textContent = text || "";
  b.hidden = !text;
}

function restartNote(res) {
  if (res && res.restart && res.restart.length) banner("Saved. A restart is needed for: " + res.restart.join(", "));
  else banner("Saved and applied.");
  setTimeout(() => banner(""), 6000);
}

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
  for (const s of $$(".page")) s.hidden = s.id !== "p-" + name;
  for (const a of $$("nav a")) a.classList.toggle("active", a.getAttribute("href") === "#" + name);
  $("#nav").hidden = name === "login" || name === "setup";
  $("#menu").hidden = $("#nav").hidden;
  if (window.innerWidth <= 700) $("#nav").classList.add("closed");
  stopPolling();
  const load = loaders[name];
  if (load) load().catch(e => banner(e.message));
}

async function route() {
  const s = await api("GET", "session");
  if (s.setup_required) return show("setup");
  if (!s.logged_in) return show("login");
  csrf = s.csrf;
  const name = location.hash.slice(1);
  show(pages.includes(name) ? name : "overview");
}

window.addEventListener("hashchange", () => route().catch(e => banner(e.message)));
$("#menu").addEventListener("click", () => $("#nav").classList.toggle("closed"));

$("#setup-form").addEventListener("submit", async ev => {
  ev.preventDefault();
  const f = ev.target, err = $("[data-for=form]", f);
  if (f.password.value !== f.password2.value) { err.textContent = "The passwords differ."; return; }
  try {
    const r = await api("POST", "setup", { password: f.password.value, gateway_id: f.gateway_id.value });
    csrf = r.csrf; f.reset(); location.hash = "#overview"; route();
  } catch (e) { err.textContent = (e.body.fields || []).map(x => x.field + ": " + x.error).join("; ") || e.message; }
});

$("#login-form").addEventListener("submit", async ev => {
  ev.preventDefault();
  const f = ev.target, err = $("[data-for=form]", f);
  err.textContent = "";
  try {
    const r = await api("POST", "login", { password: f.password.value });
    csrf = r.csrf; f.reset();
    const name = location.hash.slice(1);
    show(pages.includes(name) ? name : "overview");
  } catch (e) { err.textContent = e.message; }
});

$("#logout").addEventListener("click", async () => { await api("POST", "logout"); csrf = ""; show("login"); });

let timers = [];
function poll(fn, ms) { fn(); timers.push(setInterval(fn, ms)); }
function stopPolling() { timers.forEach(clearInterval); timers = []; if (live) live.close(); live = null; }

async function loadConfig() { cfg = await api("GET", "config"); $("#gwid").textContent = cfg.gateway.id || ""; return cfg; }

// ---- overview ----

const rateHistory = [];
function drawChart() {
  const c = $("#chart"), g = c.getContext("2d");
  const w = c.width, h = c.height;
  g.clearRect(0, 0, w, h);
  const max = Math.max(1, ...rateHistory.flatMap(p => [p.in, p.out]));
  for (const [key, color] of [["in", "#0b6bcb"], ["out", "#e07b00"]]) {
    g.strokeStyle = color; g.lineWidth = 2; g.beginPath();
    rateHistory.forEach((p, i) => { const x = i * w / 59, y = h - 4 - (p[key] / max) * (h - 8); i ? g.lineTo(x, y) : g.moveTo(x, y); });
    g.stroke();
  }
}

let last = null;
async function loadOverview() {
  poll(async () => {
    const s = await api("GET", "status");
    $("#gwid").textContent = s.gateway_id || "";
    dl($("#ov-gw"), [["Id", s.gateway_id], ["Version", s.version], ["Up", ago(s.started)]]);
    dl($("#ov-board"), Object.entries(s.board || {}).map(([k, v]) => [k, typeof v === "object" ? JSON.stringify(v) : String(v)]));
    dl($("#ov-clients"), Object.entries(s.clients || {}).map(([k, v]) => [k, String(v)]));
    const u = s.uplink || {};
    dl($("#ov-uplink"), [["State", el("span", { class: u.connected ? "on" : "off" }, u.state || "—")], ["Transport", u.transport], ["Server", u.server], ["Since", u.since ? ago(u.since) : ""], ["Last error", u.last_error]]);
    const o = s.outbox || {};
    dl($("#ov-outbox"), [["Messages", String(o.messages ?? 0)], ["Bytes", String(o.bytes ?? 0)], ["Oldest", o.oldest ? ago(o.oldest) : "—"], ["Dropped", String(o.dropped ?? 0)]]);
    $("#ov-devices tbody").replaceChildren(...(s.devices || []).map(d => el("tr", {}, el("td", {}, d.name), el("td", {}, d.kind), el("td", { class: d.online ? "on" : "off" }, d.online ? "online" : "offline"), el("td", {}, d.last_error || ""))));
    const now = Date.now();
    if (last) {
      const dt = (now - last.t) / 1000;
      rateHistory.push({ in: Math.max(0, (s.messages_in - last.in) / dt), out: Math.max(0, (s.messages_out - last.out) / dt) });
      if (rateHistory.length > 60) rateHistory.shift();
      const p = rateHistory[rateHistory.length - 1];
      $("#rates").textContent = `${p.in.toFixed(1)} in, ${p.out.toFixed(1)} out`;
      drawChart();
    }
    last = { t: now, in: s.messages_in, out: s.messages_out };
  }, 2000);
}

// ---- uplink ----

function serverRow(s = {}) {
  return el("tr", {},
    el("td", {}, el("input", { name: "host", value: s.host || "", "aria-label": "host" })),
    ...["quic_port", "tls_port", "tcp_port"].map(k => el("td", {}, el("input", { name: k, type: "number", min: 0, max: 65535, value: s[k] || 0, "aria-label": k }))),
    el("td", {}, el("button", { type: "button", class: "small danger", onclick: ev => ev.target.closest("tr").remove() }, "✕")));
}

function uplinkFromForm(f) {
  const u = structuredClone(cfg.uplink);
  u.enabled = f.enabled.checked;
  u.transport = f.transport.value;
  u.servers = $$("#servers tbody tr").map(tr => ({ host: $("[name=host]", tr).value, quic_port: +$("[name=quic_port]", tr).value, tls_port: +$("[name=tls_port]", tr).value, tcp_port: +$("[name=tcp_port]", tr).value }));
  u.client_id = f.client_id.value; u.username = f.username.value;
  u.password = f.password.value || (cfg.uplink.password ? "<redacted>" : "");
  u.tls = Object.assign({}, u.tls, { ca: f["tls.ca"].value, cert: f["tls.cert"].value, key: f["tls.key"].value, server_name: f["tls.server_name"].value });
  u.forward = JSON.parse(f.forward.value || "[]");
  u.downlink = JSON.parse(f.downlink.value || "[]");
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
  f.forward.value = JSON.stringify(u.forward || [], null, 1);
  f.downlink.value = JSON.stringify(u.downlink || [], null, 1);
  showErrors(f); $("#uplink-result").textContent = "";
  poll(async () => {
    const s = (await api("GET", "status")).uplink || {};
    dl($("#up-status"), [["State", el("span", { class: s.connected ? "on" : "off" }, s.state || "—")], ["Transport", s.transport], ["Server", s.server], ["Forwarded", String(s.forwarded ?? 0)], ["Reconnects", String(s.reconnects ?? 0)], ["Last error", s.last_error]]);
  }, 2000);
}

$("#add-server").addEventListener("click", () => $("#servers tbody").append(serverRow({ quic_port: 14567, tls_port: 8883 })));
$("#uplink-form").addEventListener("submit", async ev => {
  ev.preventDefault();
  const f = ev.target;
  try { showErrors(f); restartNote(await api("PUT", "config/uplink", uplinkFromForm(f))); await loadConfig(); }
  catch (e) { showErrors(f, e); }
});
$("#uplink-test").addEventListener("click", async () => {
  const f = $("#uplink-form"), out = $("#uplink-result");
  out.className = ""; out.textContent = "Trying…";
  try {
    showErrors(f);
    const r = await api("POST", "uplink/test", uplinkFromForm(f));
    out.className = r.ok ? "ok" : "err";
    out.textContent = r.ok ? "Connected: these settings work." : "Failed: " + r.error;
  } catch (e) { out.textContent = ""; showErrors(f, e); }
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

// ---- southbound ----

const registers = ["holding", "input", "coil", "discrete"];
const types = ["INT16", "UINT16", "INT32", "UINT32", "INT64", "UINT64", "FLOAT32", "FLOAT64", "STRING", "BOOL", "BIT"];
const orders = ["ABCD", "DCBA", "BADC", "CDAB"];
const sel = (name, opts, v) => el("select", { name, "aria-label": name }, ...opts.map(o => el("option", { selected: o === v }, o)));

function pointRow(p = {}) {
  return el("tr", {},
    el("td", {}, el("input", { name: "name", value: p.name || "", "aria-label": "point name" })),
    el("td", {}, sel("register", registers, p.register || "holding")),
    el("td", {}, el("input", { name: "address", type: "number", min: 0, max: 65535, value: p.address ?? 0, "aria-label": "address" })),
    el("td", {}, sel("type", types, p.type || "UINT16")),
    el("td", {}, sel("byte_order", orders, p.byte_order || "ABCD")),
    el("td", {}, el("input", { name: "scale", type: "number", step: "any", value: p.scale || 1, "aria-label": "scale" })),
    el("td", {}, el("input", { name: "unit", value: p.unit || "", "aria-label": "unit" })),
    el("td", {}, el("input", { name: "writable", type: "checkbox", checked: !!p.writable, "aria-label": "writable" })),
    el("td", {}, el("button", { type: "button", class: "small danger", onclick: ev => ev.target.closest("tr").remove() }, "✕")));
}

function modbus() { return cfg.southbound && cfg.southbound.modbus; }

async function loadSouthbound() {
  await loadConfig();
  const m = modbus();
  $("#sb-missing").hidden = !!m;
  $("#sb-add").hidden = !m;
  $("#dev-form").hidden = true;
  $("#reading").hidden = true;
  if (!m) return;
  $("#sb-devices").replaceChildren(...(m.devices || []).map((d, i) =>
    el("div", { class: "card", "data-device": d.name },
      el("h2", {}, d.name, " ", el("span", { class: "state off" }, "…")),
      el("p", {}, d.tcp ? "TCP " + d.tcp.address : "RTU " + (d.rtu ? d.rtu.port : ""), ", unit ", String(d.unit_id ?? 0), ", ", String((d.points || []).length), " points", el("span", { class: "err" })),
      el("div", { class: "row" },
        el("button", { onclick: () => readNow(d) }, "Read now"),
        el("button", { class: "secondary", onclick: () => editDevice(i) }, "Edit"),
        el("button", { class: "danger", onclick: () => removeDevice(i) }, "Remove")))));
  // A device just added goes online (or says why not) without a reload.
  stopPolling();
  poll(async () => {
    const status = await api("GET", "status");
    const byName = Object.fromEntries((status.devices || []).map(d => [d.name, d]));
    for (const card of $$("#sb-devices [data-device]")) {
      const st = byName[card.dataset.device] || {};
      const badge = $(".state", card);
      badge.className = "state " + (st.online ? "on" : "off");
      badge.textContent = st.online ? "online" : "offline";
      $("p .err", card).textContent = st.last_error ? " — " + st.last_error : "";
    }
  }, 2000);
}

let editing = -1;
async function editDevice(i) {
  editing = i;
  const d = i >= 0 ? modbus().devices[i] : { unit_id: 1, points: [] };
  const f = $("#dev-form");
  f.hidden = false; showErrors(f);
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

async function saveModbus(m, form) {
  try { if (form) showErrors(form); restartNote(await api("PUT", "config/southbound.modbus", m)); await loadSouthbound(); }
  catch (e) { if (form) showErrors(form, e); else banner(e.message); }
}

$("#dev-form").addEventListener("submit", async ev => {
  ev.preventDefault();
  const f = ev.target, m = structuredClone(modbus());
  const old = editing >= 0 ? m.devices[editing] : {};
  const d = Object.assign({}, old, { name: f.device.value, unit_id: +f.unit_id.value });
  delete d.tcp; delete d.rtu;
  if (f.conn.value === "tcp") d.tcp = { address: f["tcp.address"].value };
  else d.rtu = Object.assign({}, old.rtu, { port: f["rtu.port"].value, baud: +f["rtu.baud"].value, parity: f["rtu.parity"].value });
  const groups = (old.poll_groups && old.poll_groups.length) ? structuredClone(old.poll_groups) : [{ name: "default" }];
  groups[0].interval = f.interval.value;
  d.poll_groups = groups;
  const oldPoints = Object.fromEntries((old.points || []).map(p => [p.name, p]));
  d.points = $$("#points tbody tr").map(tr => {
    const v = n => $(`[name=${n}]`, tr);
    const p = Object.assign({}, oldPoints[v("name").value] || {}, { name: v("name").value, register: v("register").value, address: +v("address").value, type: v("type").value, byte_order: v("byte_order").value, scale: +v("scale").value, unit: v("unit").value, writable: v("writable").checked });
    if (p.register === "coil" || p.register === "discrete") { p.type = "BOOL"; delete p.byte_order; }
    return p;
  }).filter(p => p.name);
  m.devices = m.devices || [];
  if (editing >= 0) m.devices[editing] = d; else m.devices.push(d);
  await saveModbus(m, f);
});

async function removeDevice(i) {
  const m = structuredClone(modbus());
  if (!confirm("Remove device " + m.devices[i].name + "?")) return;
  m.devices.splice(i, 1);
  await saveModbus(m);
}

async function readNow(d) {
  const box = $("#reading");
  box.hidden = false;
  box.replaceChildren(el("h2", {}, "Reading " + d.name), el("p", { class: "note" }, "Reading…"));
  try {
    const r = await api("POST", `southbound/devices/${encodeURIComponent(d.name)}/read`);
    const writable = Object.fromEntries((d.points || []).filter(p => p.writable).map(p => [p.name, p]));
    box.replaceChildren(el("h2", {}, "Reading " + d.name + " at " + new Date(r.time).toLocaleTimeString()),
      el("div", { class: "scroll" }, el("table", { id: "reading-table" }, el("thead", {}, el("tr", {}, el("th", {}, "Point"), el("th", {}, "Value"), el("th", {}, "Raw registers"), el("th", {}, "Write"))),
        el("tbody", {}, ...(r.points || []).map(p => el("tr", { "data-point": p.name },
          el("td", {}, p.name),
          el("td", { class: "value" }, p.error ? el("span", { class: "err" }, p.error) : JSON.stringify(p.value) + (p.unit ? " " + p.unit : "")),
          el("td", {}, (p.raw || []).map(x => "0x" + x.toString(16).padStart(4, "0")).join(" ")),
          el("td", {}, writable[p.name] ? writeForm(d.name, p.name) : "")))))));
  } catch (e) { box.replaceChildren(el("h2", {}, "Reading " + d.name), el("p", { class: "err" }, e.message)); }
}

function writeForm(dev, point) {
  const input = el("input", { name: "value", "aria-label": "value for " + point, size: 6 });
  const msg = el("span");
  return el("form", { class: "row", onsubmit: async ev => {
    ev.preventDefault();
    let v = input.value;
    if (v === "true" || v === "false") v = v === "true"; else if (v !== "" && !isNaN(+v)) v = +v;
    try { await api("POST", `southbound/devices/${encodeURIComponent(dev)}/points/${encodeURIComponent(point)}/write`, { value: v }); msg.className = "ok"; msg.textContent = "written"; }
    catch (e) { msg.className = "err"; msg.textContent = e.message; }
  } }, input, el("button", { class: "small" }, "Write"), msg);
}

// ---- broker ----

async function loadBroker() {
  await loadConfig();
  const b = cfg.broker;
  $("#listeners tbody").replaceChildren(...Object.entries(b.listeners).map(([k, l]) => el("tr", { "data-listener": k },
    el("td", {}, k), el("td", {}, el("input", { type: "checkbox", name: "enabled", checked: !!l.enabled, "aria-label": k + " enabled" })),
    el("td", {}, el("input", { name: "address", value: l.address, "aria-label": k + " address" })))));
  $("#anon").checked = !!b.auth.allow_anonymous;
  $("#users tbody").replaceChildren(...(b.auth.users || []).map(u => el("tr", {}, el("td", {}, u.username),
    el("td", {}, el("button", { class: "small danger", onclick: async () => { try { restartNote(await api("DELETE", "broker/users/" + encodeURIComponent(u.username))); loadBroker(); } catch (e) { showErrors($("#user-errs"), e); } } }, "Delete")))));
  const f = $("#adv-form");
  f.acl.value = JSON.stringify(b.acl || [], null, 1);
  f.limits.value = JSON.stringify(b.limits, null, 1);
  f.banned.value = JSON.stringify(b.banned || {}, null, 1);
  poll(async () => {
    const r = await api("GET", "clients");
    $("#clients tbody").replaceChildren(...r.clients.map(c => el("tr", {}, el("td", {}, c.id), el("td", {}, c.username || ""), el("td", {}, c.listener), el("td", {}, c.remote),
      el("td", {}, el("button", { class: "small danger", onclick: async () => { await api("DELETE", "clients/" + encodeURIComponent(c.id)); } }, "Disconnect")))));
  }, 3000);
}

async function saveBroker(change, form) {
  const b = structuredClone(cfg.broker);
  try { change(b); showErrors(form); restartNote(await api("PUT", "config/broker", b)); await loadConfig(); }
  catch (e) { showErrors(form, e instanceof APIError ? e : { message: e.message }); }
}
$("#listeners-form").addEventListener("submit", ev => {
  ev.preventDefault();
  saveBroker(b => { for (const tr of $$("#listeners tbody tr")) { const l = b.listeners[tr.dataset.listener]; l.enabled = $("[name=enabled]", tr).checked; l.address = $("[name=address]", tr).value; } }, ev.target);
});
$("#anon").addEventListener("change", ev => saveBroker(b => { b.auth.allow_anonymous = ev.target.checked; }, $("#user-errs")));
$("#user-form").addEventListener("submit", async ev => {
  ev.preventDefault();
  const f = ev.target;
  try { showErrors($("#user-errs")); restartNote(await api("PUT", "broker/users/" + encodeURIComponent(f.username.value), { password: f.password.value })); f.reset(); loadBroker(); }
  catch (e) { showErrors($("#user-errs"), e); }
});
$("#adv-form").addEventListener("submit", ev => {
  ev.preventDefault();
  const f = ev.target;
  saveBroker(b => { b.acl = JSON.parse(f.acl.value); b.limits = JSON.parse(f.limits.value); b.banned = JSON.parse(f.banned.value); }, f);
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

function startLive(filter) {
  if (live) live.close();
  paused = false; $("#live-pause").textContent = "Pause";
  live = new EventSource("api/v1/live?filter=" + encodeURIComponent(filter));
  $("#live-state").textContent = "Watching " + filter;
  live.addEventListener("messages", ev => {
    const b = JSON.parse(ev.data);
    if (b.dropped) $("#live-state").textContent = `Watching ${filter} — ${b.dropped} messages not shown (too many)`;
    if (paused) return;
    const list = $("#live-list");
    for (const m of b.messages) {
      const li = el("li", { title: m.topic }, new Date(m.time).toLocaleTimeString() + "  " + m.topic + "  " + (m.text !== undefined ? m.text.slice(0, 80) : "<" + m.size + " bytes>"));
      li.addEventListener("click", () => viewMessage(m, li));
      list.prepend(li);
      if (++shown > maxShown) { list.lastChild.remove(); shown--; }
    }
  });
  live.onerror = () => { $("#live-state").textContent = "Disconnected; retrying…"; };
}

async function loadLive() { startLive($("#live-form").filter.value); }
$("#live-form").addEventListener("submit", ev => { ev.preventDefault(); startLive(ev.target.filter.value); });
$("#live-pause").addEventListener("click", ev => { paused = !paused; ev.target.textContent = paused ? "Resume" : "Pause"; });
$("#live-clear").addEventListener("click", () => { $("#live-list").replaceChildren(); shown = 0; });

// ---- config ----

$("#upload-form").addEventListener("submit", async ev => {
  ev.preventDefault();
  const f = ev.target, ok = $(".ok", f);
  ok.textContent = "";
  try {
    const text = await f.file.files[0].text();
    showErrors(f);
    const r = await api("PUT", "config" + (f.dry.checked ? "?dry_run=1" : ""), text, "application/yaml");
    if (r.valid) ok.textContent = "The config is valid.";
    else { ok.textContent = "Applied."; restartNote(r); }
  } catch (e) { showErrors(f, e); }
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

const loaders = { overview: loadOverview, uplink: loadUplink, southbound: loadSouthbound, broker: loadBroker, live: loadLive, diagnostics: loadDiagnostics };

route().catch(e => banner(e.message));
