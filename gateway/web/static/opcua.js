// fieldgate page: the OPC UA section of the Southbound tab. Lists the
// configured OPC UA servers with their state and statistics (GET
// api/v1/opcua/servers), adds and edits a server (PUT
// api/v1/config/southbound.opcua, the whole section), shows an untrusted
// server certificate's thumbprint with a "Trust this server" button (POST
// api/v1/opcua/servers/{server}/trust), browses the address space from
// Objects (GET api/v1/opcua/servers/{server}/browse?node=…) with "Add as
// point" (POST api/v1/opcua/servers/{server}/points), shows each server's
// points as a tag table with live values (GET api/v1/live), and imports and
// exports points as CSV with a dry run. Uses app.js's helpers ($, $$, el,
// api, banner, showErrors, clientError, restartNote, loadConfig, poll, sel,
// fmtValue) and wraps app.js's loadSouthbound. Its names stay
// inside one function so that none replaces one of app.js's.
"use strict";

(() => {

const policies = ["None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"];
const modes = ["None", "Sign", "SignAndEncrypt"];
const stateWords = {
  online: "online",
  offline: "offline",
  connecting: "connecting",
  untrusted: "certificate not trusted",
};

let uaLive = null;         // the live stream of the OPC UA topics
let uaEditing = -1;        // index of the server in the form; -1: a new one
let uaImportServer = "";   // the server of the open import box
const uaValues = {};       // server → point → {v, q, unit, ts, err}

function section() { return (cfg.southbound && cfg.southbound.opcua) || null; }
function uaPrefix() { const s = section(); return (s && s.prefix) || "southbound"; }
function servers() { const s = section(); return (s && s.servers) || []; }
const enc = encodeURIComponent;

// The section's HTML: built here so that index.html only loads this file.
function build() {
  if ($("#ua")) return;
  const labelled = (words, input, hint) => [el("label", {}, words + " ", input), hint ? el("p", { class: "hint" }, hint) : null];
  const form = el("form", { id: "ua-form", class: "card", hidden: true, novalidate: true },
    el("h2", { id: "ua-form-title" }, "OPC UA server"),
    ...labelled("Name", el("input", { name: "name", required: true, autocomplete: "off", pattern: "[A-Za-z0-9._-]+" }), "Used in the topics: southbound/<name>/<point>. Letters, digits, '.', '_' and '-'."),
    ...labelled("Endpoint URL", el("input", { name: "endpoint", required: true, autocomplete: "off", placeholder: "opc.tcp://10.0.0.20:4840", inputmode: "url" }), "The server's opc.tcp:// address, as its manual or its discovery shows it."),
    ...labelled("Security policy", sel("policy", policies, "None", "security policy"), "None sends everything in clear; Basic256Sha256 or newer with Sign and encrypt on a plant network."),
    ...labelled("Security mode", sel("mode", modes, "None", "security mode"), "Sign: messages cannot be changed on the way; Sign and encrypt: nor read."),
    ...labelled("Log in as", sel("auth", [["anonymous", "anonymous"], ["username", "user name and password"], ["certificate", "user certificate"]], "anonymous", "user token"), null),
    el("div", { "data-auth": "username", hidden: true },
      ...labelled("User name", el("input", { name: "username", autocomplete: "off" })),
      ...labelled("Password", el("input", { name: "password", type: "password", autocomplete: "new-password" }), "Kept on the gateway; shown as dots when you edit the server again.")),
    el("div", { "data-auth": "certificate", hidden: true },
      ...labelled("User certificate file (PEM or DER)", el("input", { name: "certificate", autocomplete: "off", placeholder: "/var/lib/fieldgate/opcua/user.pem" })),
      ...labelled("Its private key file", el("input", { name: "key", autocomplete: "off", placeholder: "/var/lib/fieldgate/opcua/user.key" }))),
    ...labelled("Read values by", sel("readmode", [["subscribe", "subscription: the server sends changes"], ["poll", "polling: the gateway asks every interval"]], "subscribe", "how values are read"), "Subscriptions are the OPC UA way; poll servers that do not support them."),
    ...labelled("Interval", el("input", { name: "interval", autocomplete: "off", placeholder: "1s" }), "Publishing interval of the subscription, or how often points are polled: 500ms, 1s, 1m. Empty: 1s."),
    el("ul", { class: "errs", role: "alert" }),
    el("div", { class: "row" }, el("button", { type: "submit" }, "Save server"), el("button", { type: "button", class: "secondary", id: "ua-cancel" }, "Cancel")));
  const browse = el("section", { id: "ua-browse", class: "card", hidden: true, "aria-labelledby": "ua-browse-title" },
    el("h2", { id: "ua-browse-title" }, "Browse"),
    el("p", { class: "hint" }, "The server's address space from Objects. Open a folder or object to see what it holds; each variable shows its type, value and whether it can be written. \"Add as point\" adds it to the server's points at once."),
    el("p", { class: "note", id: "ua-browse-msg", role: "status" }),
    el("ul", { class: "ua-tree", id: "ua-tree", role: "tree", "aria-labelledby": "ua-browse-title" }),
    el("div", { class: "row" }, el("button", { type: "button", class: "secondary", id: "ua-browse-close" }, "Close")));
  const imp = el("section", { id: "ua-import", class: "card", hidden: true, "aria-labelledby": "ua-import-title" },
    el("h2", { id: "ua-import-title" }, "Import points"),
    el("form", { id: "ua-import-form" },
      el("label", {}, "Point file (CSV) ", el("input", { type: "file", name: "file", accept: ".csv,text/csv", required: true })),
      el("label", {}, "Mode ", el("select", { name: "mode" }, el("option", { value: "replace" }, "replace the server's points"), el("option", { value: "merge" }, "merge: replace same-named points, add the others"))),
      el("div", { class: "row" }, el("button", { type: "submit" }, "Check the file"), el("button", { type: "button", id: "ua-import-apply", class: "danger", hidden: true }, "Apply"), el("button", { type: "button", id: "ua-import-close", class: "secondary" }, "Close"))),
    el("div", { id: "ua-import-result", role: "status" }));
  const box = el("section", { id: "ua", "aria-labelledby": "ua-title" },
    el("h2", { id: "ua-title", class: "ua-title" }, "OPC UA"),
    el("p", { id: "ua-missing", class: "note", hidden: true }, "This build has no OPC UA section in its config."),
    el("p", { id: "ua-own", class: "note", hidden: true }),
    el("div", { id: "ua-servers" }),
    el("div", { class: "row" },
      el("button", { id: "ua-add", type: "button" }, "Add OPC UA server"),
      el("a", { class: "button secondary", href: "api/v1/opcua/points-template.csv", download: "" }, "Download point CSV template")),
    form, browse, imp);
  $("#p-southbound").append(box);
  form.auth.addEventListener("change", authChanged);
  form.addEventListener("submit", ev => { ev.preventDefault(); saveForm().catch(e => banner(e.message)); });
  $("#ua-add").addEventListener("click", () => edit(-1));
  $("#ua-cancel").addEventListener("click", () => { form.hidden = true; });
  $("#ua-browse-close").addEventListener("click", () => { browse.hidden = true; });
  $("#ua-import-form").addEventListener("submit", ev => { ev.preventDefault(); runImport(true); });
  $("#ua-import-apply").addEventListener("click", () => runImport(false));
  $("#ua-import-close").addEventListener("click", () => { imp.hidden = true; });
}

function authChanged() {
  const f = $("#ua-form");
  for (const d of $$("[data-auth]", f)) d.hidden = d.dataset.auth !== f.auth.value;
}

// ---- the server cards ----

function serverCard(s, i) {
  const name = s.name;
  const pts = s.points || [];
  const rows = pts.map(p => el("tr", { "data-point": p.name, "data-search": ((p.node || p.path || "") + " " + (p.unit || "")).toLowerCase() },
    el("td", {}, el("b", {}, p.name), p.description ? el("div", { class: "hint" }, p.description) : null),
    el("td", { class: "ua-node" }, p.node || p.path || ""),
    el("td", { class: "value" }, "—"),
    el("td", { class: "quality" }, "—"),
    el("td", { class: "unit" }, p.unit || ""),
    el("td", { class: "time" }, "—"),
    el("td", { class: "lasterr" }, ""),
    el("td", { class: "write" }, p.writable ? writeControl(name, p) : el("span", { class: "note" }, "read only"))));
  const card = el("div", { class: "card device ua-server", "data-server": name },
    el("h2", {}, name, " ", el("span", { class: "state off" }, "…")),
    el("p", { class: "devline" }, s.endpoint || "", " · ", (s.security && s.security.policy) || "None", " / ", (s.security && s.security.mode) || "None", " · ", String(pts.length), " points", el("span", { class: "err deverr" })),
    el("div", { class: "ua-cert", hidden: true }),
    el("p", { class: "stats note" }, ""),
    el("div", { class: "row" },
      el("button", { type: "button", class: "small", onclick: () => openBrowse(name) }, "Browse"),
      el("button", { type: "button", class: "small secondary", onclick: () => edit(i) }, "Edit"),
      el("a", { class: "button small secondary", href: `api/v1/opcua/servers/${enc(name)}/points.csv`, download: name + "-points.csv" }, "Export CSV"),
      el("button", { type: "button", class: "small secondary", onclick: () => openImport(name) }, "Import CSV"),
      el("button", { type: "button", class: "small danger", onclick: () => remove(i) }, "Remove")),
    pts.length ? el("div", { class: "scroll" }, el("table", { class: "stack tags ua-tags" },
      el("thead", {}, el("tr", {}, ...["Point", "Node", "Value", "Quality", "Unit", "Updated", "Last error", "Write"].map(h => el("th", {}, h)))),
      el("tbody", {}, ...rows))) : el("p", { class: "note" }, "No points yet: use Browse to add some, or import a CSV file."));
  return card;
}

// writeControl writes a value through the gateway's set command (the same
// path as an MQTT client's southbound/<server>/<point>/set).
function writeControl(server, p) {
  const msg = el("span", { role: "status", class: "wmsg" });
  const input = el("input", { name: "value", "aria-label": "new value for " + p.name, autocomplete: "off" });
  return el("form", { class: "row", onsubmit: async ev => {
    ev.preventDefault();
    let v = input.value.trim();
    if (/^-?\d+(,\d+)?$/.test(v)) v = v.replace(",", ".");
    if (v === "true" || v === "false") v = v === "true"; else if (v !== "" && !isNaN(+v)) v = +v;
    if (v === "") { msg.className = "wmsg err"; msg.textContent = "type a value first"; return; }
    msg.className = "wmsg note"; msg.textContent = "writing…";
    try {
      await api("POST", `opcua/servers/${enc(server)}/points/${enc(p.name)}/write`, { value: v });
      msg.className = "wmsg ok"; msg.textContent = "written";
    } catch (e) { msg.className = "wmsg err"; msg.textContent = e.message; }
  } }, input, el("button", { class: "small" }, "Write"), msg);
}

// showValue puts one value in its row.
function showValue(server, point, u) {
  const st = ((uaValues[server] = uaValues[server] || {})[point] = Object.assign(uaValues[server][point] || {}, u));
  const card = $(`#ua-servers [data-server="${CSS.escape(server)}"]`);
  const tr = card && $(`tr[data-point="${CSS.escape(point)}"]`, card);
  if (!tr) return;
  const bad = st.q && st.q !== "good";
  $(".value", tr).textContent = fmtValue(st.v) + (st.unit && st.v !== null && st.v !== undefined && typeof st.v === "number" ? " " + st.unit : "");
  $(".quality", tr).textContent = st.q ? st.q + (st.status ? " (" + st.status + ")" : "") : "—";
  $(".quality", tr).className = "quality " + (bad ? "off" : st.q ? "on" : "");
  $(".time", tr).textContent = st.ts ? new Date(st.ts).toLocaleTimeString() : "—";
  $(".lasterr", tr).textContent = st.err || "";
  tr.classList.toggle("bad", !!bad);
}

function onMessages(msgs) {
  const pre = uaPrefix() + "/";
  const names = new Set(servers().map(s => s.name));
  for (const m of msgs) {
    if (!m.topic.startsWith(pre) || m.text === undefined) continue;
    const parts = m.topic.slice(pre.length).split("/");
    if (parts.length !== 2 || !names.has(parts[0]) || parts[1] === "status") continue;
    let body;
    try { body = JSON.parse(m.text); } catch { continue; }
    if (body && typeof body === "object" && "v" in body) showValue(parts[0], parts[1], { v: body.v, q: body.q, unit: body.unit, ts: body.ts, status: body.status, err: body.err || "" });
  }
}

function startLive() {
  if (uaLive) uaLive.close();
  if (!servers().length) { uaLive = null; return; }
  const src = new EventSource("api/v1/live?filter=" + enc(uaPrefix() + "/#"));
  uaLive = src;
  src.addEventListener("messages", ev => { if ($("#p-southbound").hidden) { src.close(); return; } onMessages(JSON.parse(ev.data).messages || []); });
  src.onerror = () => {
    if (src.readyState === EventSource.CLOSED && uaLive === src) setTimeout(() => { if (uaLive === src && !$("#p-southbound").hidden) startLive(); }, 3000);
  };
}

// certBox shows an untrusted server certificate and the button that trusts it.
function certBox(box, server, st) {
  const c = st.certificate;
  if (!c || c.trusted || !c.thumbprint) { box.hidden = true; box.replaceChildren(); return; }
  if (box.dataset.thumb === c.thumbprint && !box.hidden) return;
  box.dataset.thumb = c.thumbprint;
  box.hidden = false;
  const msg = el("span", { class: "wmsg", role: "status" });
  box.replaceChildren(
    el("p", { class: "err" }, "The server's certificate is not trusted yet, so the gateway does not connect. Compare its thumbprint with the one the server shows (its configuration tool or display) before you trust it."),
    el("dl", {}, el("dt", {}, "Subject"), el("dd", {}, c.subject || "—"),
      el("dt", {}, "Thumbprint (SHA-1)"), el("dd", { class: "ua-thumb" }, c.thumbprint),
      c.not_after ? el("dt", {}, "Valid until") : null, c.not_after ? el("dd", {}, new Date(c.not_after).toLocaleDateString()) : null),
    el("div", { class: "row" }, el("button", { type: "button", class: "ua-trust", onclick: async () => {
      msg.className = "wmsg note"; msg.textContent = "trusting…";
      try {
        await api("POST", `opcua/servers/${enc(server)}/trust`, { thumbprint: c.thumbprint });
        msg.className = "wmsg ok"; msg.textContent = "trusted: connecting…";
        await refresh();
      } catch (e) { msg.className = "wmsg err"; msg.textContent = e.message; }
    } }, "Trust this server"), msg));
}

async function refresh() {
  const r = await api("GET", "opcua/servers");
  const byName = Object.fromEntries((r.servers || []).map(s => [s.name, s]));
  for (const card of $$("#ua-servers [data-server]")) {
    const st = byName[card.dataset.server] || {};
    const badge = $(".state", card);
    badge.className = "state " + (st.state === "online" ? "on" : "off");
    badge.textContent = stateWords[st.state] || st.state || "not running";
    // An untrusted certificate is said in its own box, with the button.
    $(".deverr", card).textContent = st.last_error && st.state !== "online" && st.state !== "untrusted" ? " — " + st.last_error : "";
    certBox($(".ua-cert", card), card.dataset.server, st);
    const x = st.stats;
    if (x) {
      const errs = Object.entries(x.errors || {}).filter(([, n]) => n).map(([k, n]) => `${k} ${n}`).join(", ");
      $(".stats", card).textContent = `${x.monitored_items ?? 0} monitored, ${x.polled_points ?? 0} polled · ${x.notifications ?? 0} changes · ${x.reads ?? 0} reads · ${x.writes ?? 0} writes (${x.write_errors ?? 0} failed) · ${x.reconnects ?? 0} reconnects (${x.resumed ?? 0} resumed) · errors: ${errs || "none"}`;
    }
  }
}

async function load() {
  build();
  for (const id of ["#ua-form", "#ua-browse", "#ua-import"]) $(id).hidden = true;
  const s = section();
  $("#ua-missing").hidden = !!s;
  $("#ua-add").hidden = !s;
  if (!s) return;
  $("#ua-servers").replaceChildren(...servers().map(serverCard));
  for (const [srv, pts] of Object.entries(uaValues)) for (const [p, u] of Object.entries(pts)) showValue(srv, p, u);
  startLive();
  if (servers().length) poll(refresh, 2000);
  ownCertificate().catch(() => { $("#ua-own").hidden = true; });
}

// ownCertificate shows the gateway's application certificate, which a
// server that checks its clients must trust.
async function ownCertificate() {
  if (!servers().length) { $("#ua-own").hidden = true; return; }
  const c = await api("GET", "opcua/certificate");
  $("#ua-own").replaceChildren("This gateway's certificate (a server with security on must trust it): thumbprint ",
    el("code", { class: "ua-thumb" }, c.thumbprint), " ",
    el("a", { class: "button small secondary", href: "api/v1/opcua/certificate.der", download: "fieldgate-opcua.der" }, "Download it (DER)"));
  $("#ua-own").hidden = false;
}

// ---- add and edit ----

function edit(i) {
  const f = $("#ua-form");
  uaEditing = i;
  const s = i >= 0 ? servers()[i] : {};
  f.hidden = false; showErrors(f);
  $("#ua-form-title").textContent = i >= 0 ? "Edit " + s.name : "New OPC UA server";
  f.name.value = s.name || "";
  f.endpoint.value = s.endpoint || "";
  f.policy.value = (s.security && s.security.policy) || "None";
  f.mode.value = (s.security && s.security.mode) || "None";
  f.readmode.value = s.mode || "subscribe";
  f.interval.value = s.interval && s.interval !== "0s" ? s.interval : "";
  const a = s.auth || {};
  f.auth.value = a.username ? "username" : a.certificate ? "certificate" : "anonymous";
  f.username.value = a.username || "";
  f.password.value = a.password || "";
  f.certificate.value = a.certificate || "";
  f.key.value = a.key || "";
  authChanged();
  f.scrollIntoView({ behavior: "smooth" });
}

// fieldFor maps a config path of the server in the form to its input.
function fieldFor(path) {
  const m = path.match(/servers\[(\d+)\]\.?(.*)$/);
  const f = $("#ua-form");
  if (!m) return null;
  const key = { name: "name", endpoint: "endpoint", "security.policy": "policy", "security.mode": "mode", security: "policy", "auth.username": "username", "auth.password": "password", "auth.certificate": "certificate", "auth.key": "key", auth: "auth", mode: "readmode", interval: "interval" }[m[2]];
  return key ? { input: f[key], words: f[key].closest("label").firstChild.textContent.trim() } : { input: null, words: "Server " + f.name.value + (m[2] ? ", " + m[2] : "") };
}

async function saveForm() {
  const f = $("#ua-form");
  const sec = structuredClone(section());
  sec.servers = sec.servers || [];
  const idx = uaEditing >= 0 ? uaEditing : sec.servers.length;
  const path = `southbound.opcua.servers[${idx}]`;
  const bad = [];
  if (!/^[A-Za-z0-9._-]+$/.test(f.name.value.trim())) bad.push({ field: path + ".name", error: "use letters, digits, '.', '_' or '-' (no spaces)" });
  if (!/^opc\.tcp:\/\/[^\s/]+/.test(f.endpoint.value.trim())) bad.push({ field: path + ".endpoint", error: "write it as opc.tcp://host:port, e.g. opc.tcp://10.0.0.20:4840" });
  if ((f.policy.value === "None") !== (f.mode.value === "None")) bad.push({ field: path + ".security.mode", error: "the policy None goes with the mode None, and a policy other than None with Sign or Sign and encrypt" });
  if (f.auth.value === "username" && !f.username.value.trim()) bad.push({ field: path + ".auth.username", error: "type the user name" });
  if (f.auth.value === "certificate" && (!f.certificate.value.trim() || !f.key.value.trim())) bad.push({ field: path + ".auth.certificate", error: "name the certificate and its key file" });
  if (f.interval.value.trim() && !/^\d+(\.\d+)?(ms|s|m|h)$/.test(f.interval.value.trim())) bad.push({ field: path + ".interval", error: "a duration such as 500ms, 1s or 1m" });
  if (bad.length) { showErrors(f, clientError(bad), fieldFor); return; }
  const old = uaEditing >= 0 ? sec.servers[uaEditing] : {};
  const s = Object.assign({}, old, { name: f.name.value.trim(), endpoint: f.endpoint.value.trim(), security: Object.assign({}, old.security, { policy: f.policy.value, mode: f.mode.value }) });
  s.mode = f.readmode.value;
  if (f.interval.value.trim()) s.interval = f.interval.value.trim(); else delete s.interval;
  if (f.auth.value === "username") s.auth = { username: f.username.value.trim(), password: f.password.value };
  else if (f.auth.value === "certificate") s.auth = { certificate: f.certificate.value.trim(), key: f.key.value.trim() };
  else delete s.auth;
  if (uaEditing >= 0) sec.servers[uaEditing] = s; else sec.servers.push(s);
  try { showErrors(f); restartNote(await api("PUT", "config/southbound.opcua", sec)); await reload(); }
  catch (e) { showErrors(f, e, fieldFor); }
}

async function remove(i) {
  const sec = structuredClone(section());
  if (!confirm("Remove OPC UA server " + sec.servers[i].name + "? Its points stop being read.")) return;
  sec.servers.splice(i, 1);
  try { restartNote(await api("PUT", "config/southbound.opcua", sec)); await reload(); }
  catch (e) { banner(e.message); }
}

// reload shows the tab again after a change (one poll, one stream).
async function reload() { await loadSouthbound(); }

// ---- browse ----

let browseServer = "";
function openBrowse(name) {
  browseServer = name;
  const box = $("#ua-browse");
  box.hidden = false;
  $("#ua-browse-title").textContent = "Browse " + name;
  $("#ua-tree").replaceChildren();
  box.scrollIntoView({ behavior: "smooth" });
  expand($("#ua-tree"), "", 0).catch(e => { $("#ua-browse-msg").textContent = e.message; });
}

// expand lists a node's children under ul (the root: Objects).
async function expand(ul, node, depth) {
  const msg = $("#ua-browse-msg");
  msg.className = "note"; msg.textContent = "Browsing…";
  let r;
  try { r = await api("GET", `opcua/servers/${enc(browseServer)}/browse` + (node ? "?node=" + enc(node) : "")); }
  catch (e) { msg.className = "err"; msg.textContent = "Browse failed: " + e.message; throw e; }
  msg.textContent = "";
  const kids = r.children || [];
  ul.replaceChildren(...kids.map(n => treeItem(n, depth)));
  if (!kids.length) ul.append(el("li", { class: "note" }, "(empty)"));
}

function treeItem(n, depth) {
  const li = el("li", { role: "treeitem", "data-node": n.node_id, class: "ua-item" });
  const label = n.display_name || n.browse_name || n.node_id;
  if (n.class === "Variable") {
    const add = el("button", { type: "button", class: "small ua-addpoint", "aria-label": "Add " + label + " as point" }, "Add as point");
    const msg = el("span", { class: "wmsg", role: "status" });
    add.addEventListener("click", async () => {
      add.disabled = true; msg.className = "wmsg note"; msg.textContent = "adding…";
      try {
        const res = await api("POST", `opcua/servers/${enc(browseServer)}/points`, { node: n.node_id, browse_name: n.browse_name || "", writable: n.access === "RW" });
        msg.className = "wmsg ok"; msg.textContent = "added as " + res.point.name;
        restartNote(res);
        await loadConfig();
        $("#ua-servers").replaceChildren(...servers().map(serverCard));
        for (const [srv, pts] of Object.entries(uaValues)) for (const [p, u] of Object.entries(pts)) showValue(srv, p, u);
        startLive();
        await refresh();
      } catch (e) { add.disabled = false; msg.className = "wmsg err"; msg.textContent = e.message; }
    });
    li.append(el("div", { class: "ua-var" },
      el("b", {}, label),
      el("span", { class: "ua-meta" }, (n.type || "?") + (n.array ? "[]" : "") + " · " + (n.access === "RW" ? "read/write" : n.access === "WO" ? "write only" : "read only")),
      el("span", { class: "ua-val" }, fmtValue(n.value) + (n.status ? " (" + n.status + ")" : "")),
      el("code", { class: "ua-id" }, n.node_id),
      el("div", { class: "row" }, add, msg)));
  } else if (!n.has_children) {
    li.append(el("div", { class: "ua-obj" }, el("span", {}, label), el("span", { class: "ua-meta" }, n.class || "")));
  } else {
    const sub = el("ul", { role: "group", hidden: true });
    const btn = el("button", { type: "button", class: "ua-open secondary small", "aria-expanded": "false" }, "▸ " + label);
    btn.addEventListener("click", async () => {
      const open = btn.getAttribute("aria-expanded") === "true";
      btn.setAttribute("aria-expanded", String(!open));
      btn.textContent = (open ? "▸ " : "▾ ") + label;
      sub.hidden = open;
      if (!open && !sub.dataset.loaded) {
        try { await expand(sub, n.node_id, depth + 1); sub.dataset.loaded = "1"; } catch { /* shown */ }
      }
    });
    li.append(el("div", { class: "ua-obj" }, btn, el("span", { class: "ua-meta" }, n.class || "")), sub);
  }
  return li;
}

// ---- CSV import ----

function openImport(name) {
  uaImportServer = name;
  const box = $("#ua-import");
  box.hidden = false;
  $("#ua-import-title").textContent = "Import points into " + name;
  $("#ua-import-form").reset();
  $("#ua-import-result").replaceChildren();
  $("#ua-import-apply").hidden = true;
  box.scrollIntoView({ behavior: "smooth" });
}

async function runImport(dry) {
  const f = $("#ua-import-form"), out = $("#ua-import-result"), file = f.file.files[0];
  if (!file) { out.replaceChildren(el("p", { class: "err" }, "Choose a CSV file first.")); return; }
  out.replaceChildren(el("p", { class: "note" }, dry ? "Checking…" : "Applying…"));
  try {
    const r = await api("POST", `opcua/servers/${enc(uaImportServer)}/points.csv?mode=${f.mode.value}${dry ? "&dry_run=1" : ""}`, await file.text(), "text/csv");
    const errs = r.errors || [];
    const bad = new Set(errs.map(e => e.line)).size;
    const good = r.points ?? 0;
    out.replaceChildren(
      el("p", { class: errs.length ? "err" : "ok", id: "ua-import-summary" }, dry
        ? `${r.rows} rows: ${good} good` + (errs.length ? `, ${bad} with errors (listed below; they are left out).` : ".")
        : `Applied: ${good} points imported` + (errs.length ? `, ${bad} rows left out (listed below).` : ".")),
      errs.length ? el("div", { class: "scroll" }, el("table", { class: "stack", id: "ua-import-errors" },
        el("thead", {}, el("tr", {}, el("th", {}, "Line"), el("th", {}, "Column"), el("th", {}, "Error"))),
        el("tbody", {}, ...errs.map(e => el("tr", { "data-line": e.line }, el("td", {}, String(e.line)), el("td", {}, e.column || ""), el("td", {}, e.error)))))) : null);
    $("#ua-import-apply").hidden = !dry || good === 0;
    $("#ua-import-apply").textContent = `Apply the ${good} good rows`;
    if (!dry) { restartNote(r); await loadConfig(); $("#ua-servers").replaceChildren(...servers().map(serverCard)); startLive(); }
  } catch (e) {
    $("#ua-import-apply").hidden = true;
    out.replaceChildren(el("p", { class: "err" }, "The file was not accepted: " + e.message));
  }
}

// The Southbound tab shows the Modbus devices (app.js), then this section:
// app.js's loadSouthbound (the tab's loader, and what a Modbus save calls,
// which stops every poll) is wrapped so that this section follows it.
const modbusLoader = loadSouthbound;
// eslint-disable-next-line no-global-assign
loadSouthbound = async keepForms => {
  await modbusLoader(keepForms);
  await load();
};
// Leaving the tab closes the stream.
window.addEventListener("hashchange", () => { if (location.hash !== "#southbound" && uaLive) { uaLive.close(); uaLive = null; } });

})();
