// fieldgate page: the Rules tab. Lists the edge rules of the config with
// their counters (GET api/v1/status: rules), turns a rule on or off, adds,
// edits and deletes rules and their actions (PUT api/v1/config/rules, the
// whole list), and tests a rule's SQL on a sample message (POST
// api/v1/rules/test). An error in the SQL is shown at the editor with its
// line and column, and the caret is put there. Uses app.js's helpers ($,
// el, api, banner, showErrors, markField, restartNote, loadConfig, poll)
// and registers itself in app.js's pages and loaders. Its names stay
// inside one function so that none replaces one of app.js's.
"use strict";

(() => {

let ruleEditing = -1;   // index in cfg.rules of the rule in the form; -1: a new rule
let ruleActionsSeen = []; // the actions as loaded, so fields the form does not show are kept

// The fields of each action kind: [key, words, type, options].
const ruleActionFields = {
  republish: [["topic", "Topic", "text", "alarms/${topic}"], ["qos", "QoS", "select", ["0", "1", "2"]], ["retain", "Retained", "check"], ["payload", "Payload", "area", "empty: the output as JSON (${*})"]],
  uplink: [["topic", "Topic", "text", "sites/${gateway_id}/alarms"], ["qos", "QoS", "select", ["1", "0"]], ["payload", "Payload", "area", "empty: the output as JSON (${*})"]],
  http: [["url", "URL", "text", "http://10.0.0.5:8080/hook"], ["method", "Method", "select", ["POST", "PUT"]], ["headers", "Headers, one \"Name: value\" a line", "area", "Authorization: Bearer …"], ["body", "Body", "area", "empty: the output as JSON (${*})"], ["timeout", "Timeout", "text", "10s"], ["queue_max", "Queue limit", "number", "10000"]],
  log: [["payload", "Include the output in the log line", "check"]],
};

function ruleKind(a) { return Object.keys(ruleActionFields).find(k => a && a[k] !== undefined) || "log"; }

// ruleSQLLines numbers the editor's lines and keeps the gutter scrolled
// with the text.
function ruleSQLLines() {
  const ta = $("#rule-sql"), g = $("#rule-form .rl-lines");
  const n = ta.value.split("\n").length;
  g.textContent = Array.from({ length: n }, (_, i) => i + 1).join("\n");
  g.scrollTop = ta.scrollTop;
}

// ruleSQLAt puts the caret at line:col of the SQL (both from 1).
function ruleSQLAt(line, col) {
  const ta = $("#rule-sql"), lines = ta.value.split("\n");
  let off = 0;
  for (let i = 0; i < Math.min(line - 1, lines.length); i++) off += lines[i].length + 1;
  off = Math.min(off + Math.max(col - 1, 0), ta.value.length);
  ta.focus();
  ta.setSelectionRange(off, Math.min(off + 1, ta.value.length));
}

// ruleSQLError marks the editor with an error (null: clears it); a
// position "line L, col C" in it moves the caret there.
function ruleSQLError(msg) {
  const ta = $("#rule-sql");
  for (const x of $$(".rl-editor .ferr")) x.remove();
  ta.removeAttribute("aria-invalid");
  ta.removeAttribute("aria-describedby");
  if (!msg) return;
  markField(ta, msg);
  const m = /line (\d+), col (\d+)/.exec(msg);
  if (m) ruleSQLAt(+m[1], +m[2]);
}

function ruleActionBox(a, i) {
  const kind = ruleKind(a), v = a[kind] || {};
  const box = el("fieldset", { class: "rl-action", "data-kind": kind },
    el("legend", {}, `Action ${i + 1}: ${kind}`));
  const fields = el("div", { class: "fields" });
  for (const [key, words, type, extra] of ruleActionFields[kind]) {
    let val = v[key];
    if (key === "headers" && Array.isArray(val)) val = val.join("\n");
    let input;
    if (type === "check") {
      input = el("input", { type: "checkbox", "data-key": key, checked: !!val });
      fields.append(el("label", { class: "check" }, input, " " + words));
      continue;
    }
    if (type === "select") {
      input = el("select", { "data-key": key }, ...extra.map(o => el("option", { value: o }, o)));
      if (val !== undefined && val !== "") input.value = String(val);
    } else if (type === "area") {
      input = el("textarea", { "data-key": key, rows: "2", spellcheck: "false", placeholder: extra });
      input.value = val === undefined ? "" : String(val);
    } else {
      input = el("input", { type: type === "number" ? "number" : "text", "data-key": key, autocomplete: "off", spellcheck: "false", autocapitalize: "off", placeholder: extra, inputmode: type === "number" ? "numeric" : undefined });
      input.value = val === undefined || val === 0 || val === "0s" ? "" : String(val);
    }
    fields.append(el("label", {}, words + " ", input));
  }
  box.append(fields, el("div", { class: "row" }, el("button", { type: "button", class: "secondary danger", onclick: () => { const all = ruleActionsRead(); all.splice(i, 1); ruleActionsSeen = all; ruleActionsShow(all); } }, `Remove action ${i + 1}`)));
  return box;
}

function ruleActionsShow(actions) { $("#rule-actions").replaceChildren(...actions.map(ruleActionBox)); }

// ruleActionsRead reads the action forms, over the actions as loaded.
function ruleActionsRead() {
  return $$("#rule-actions .rl-action").map((box, i) => {
    const kind = box.dataset.kind;
    const seen = ruleActionsSeen[i] && ruleActionsSeen[i][kind] ? ruleActionsSeen[i][kind] : {};
    const v = Object.assign({}, seen);
    for (const input of $$("[data-key]", box)) {
      const k = input.dataset.key;
      if (input.type === "checkbox") v[k] = input.checked;
      else if (k === "qos" || k === "queue_max") { if (input.value === "") delete v[k]; else v[k] = +input.value; }
      else if (k === "headers") v[k] = input.value.split("\n").map(s => s.trim()).filter(Boolean);
      else if (input.value === "" && (k === "timeout" || k === "method")) delete v[k];
      else v[k] = input.value;
    }
    return { [kind]: v };
  });
}

function ruleFromForm() {
  const f = $("#rule-form");
  return { id: f.id.value.trim(), description: f.description.value, enabled: f.enabled.checked, sql: f.sql.value, actions: ruleActionsRead() };
}

function ruleOpen(i) {
  const f = $("#rule-form"), r = i >= 0 ? cfg.rules[i] : { enabled: true, sql: "", actions: [{ log: {} }] };
  ruleEditing = i;
  showErrors(f);
  ruleSQLError(null);
  f.id.value = r.id || "";
  f.description.value = r.description || "";
  f.enabled.checked = r.enabled !== false;
  f.sql.value = r.sql || "";
  ruleActionsSeen = JSON.parse(JSON.stringify(r.actions || []));
  ruleActionsShow(ruleActionsSeen);
  $("#rule-form-title").textContent = i >= 0 ? "Edit rule " + r.id : "New rule";
  f.hidden = false;
  $("#rule-test").hidden = false;
  $("#rule-test-out").replaceChildren();
  showErrors($("#rule-test"));
  const topic = $("#rule-test").topic;
  if (!topic.value) { const m = /FROM\s+"([^"$+#]+)"/i.exec(r.sql || ""); if (m) topic.value = m[1]; }
  ruleSQLLines();
  f.id.focus();
}

function ruleClose() { $("#rule-form").hidden = true; $("#rule-test").hidden = true; ruleEditing = -1; }

// ruleFieldAt maps an error's config path to the form: the edited rule's
// fields and its actions' fields.
function ruleFieldAt(path) {
  const m = /^rules\[(\d+)\]\.(.*)$/.exec(path);
  if (!m || +m[1] !== ruleIndex()) return null;
  const f = $("#rule-form"), rest = m[2];
  if (rest === "id" || rest === "description") return { input: f[rest], words: rest === "id" ? "Id" : "Description" };
  if (rest === "sql") return { input: null, words: "SQL", sql: true };
  const a = /^actions\[(\d+)\](?:\.(\w+)(?:\.(\w+))?)?/.exec(rest);
  if (a) {
    const box = $$("#rule-actions .rl-action")[+a[1]];
    const input = box && a[3] ? $(`[data-key="${a[3]}"]`, box) : (box ? $("[data-key]", box) : null);
    return { input, words: `Action ${+a[1] + 1}` + (a[3] ? " " + a[3] : "") };
  }
  return null;
}

function ruleIndex() { return ruleEditing >= 0 ? ruleEditing : (cfg.rules || []).length; }

// ruleSave puts the whole list with rules changed by change (a copy).
async function ruleSave(change) {
  const list = JSON.parse(JSON.stringify(cfg.rules || []));
  change(list);
  const res = await api("PUT", "config/rules", list);
  await loadConfig();
  return res;
}

function ruleStatsOf(st, id) {
  const rs = (st && st.rules || []).find(r => r.id === id) || {};
  const acts = (st && st.actions || []).filter(a => a.rule === id);
  return { rs, acts };
}

function ruleStatsBox(id, st) {
  const { rs, acts } = ruleStatsOf(st, id);
  const n = v => String(v || 0);
  const pair = (k, v) => el("div", {}, el("dt", {}, k), el("dd", {}, n(v)));
  const box = el("div", { class: "rl-statbox", "data-rule": id },
    el("dl", { class: "rl-stats" }, pair("matched", rs.matched), pair("passed", rs.passed), pair("filtered", rs.filtered), pair("no result", rs.no_result), pair("failed", rs.failed), pair("dropped", rs.dropped)));
  if (acts.length) box.append(el("ol", { class: "rl-acts" }, ...acts.map(a => el("li", {}, `${a.kind}: ${n(a.success)} ok, ${n(a.failed)} failed, ${n(a.dropped)} dropped` + (a.queued ? `, ${a.queued} queued` : "")))));
  if (rs.last_error) box.append(el("p", { class: "rl-lasterr" }, "Last error: " + rs.last_error));
  return box;
}

function ruleActionWords(a) {
  const k = ruleKind(a), v = a[k] || {};
  return k + (v.topic ? " → " + v.topic : v.url ? " → " + v.url : "");
}

function ruleList(st) {
  const list = cfg.rules || [];
  if (!list.length) { $("#rule-list").replaceChildren(el("p", { class: "note" }, "No rules yet.")); return; }
  $("#rule-list").replaceChildren(...list.map((r, i) => el("div", { class: "card rl-item", "data-rule": r.id },
    el("div", { class: "rl-head" }, el("h3", {}, r.id),
      el("div", { class: "row" },
        el("button", { type: "button", class: "toggle", "aria-pressed": String(!!r.enabled), "aria-label": `Rule ${r.id} enabled`, onclick: () => ruleToggle(i) }, r.enabled ? "Enabled" : "Disabled"),
        el("button", { type: "button", class: "secondary", "aria-label": `Edit rule ${r.id}`, onclick: () => ruleOpen(i) }, "Edit"),
        el("button", { type: "button", class: "danger", "aria-label": `Delete rule ${r.id}`, onclick: () => ruleDelete(i) }, "Delete"))),
    r.description ? el("p", { class: "rl-desc" }, r.description) : null,
    el("pre", { class: "rl-sqlview" }, r.sql || ""),
    el("p", { class: "hint" }, "Actions: " + ((r.actions || []).map(ruleActionWords).join("; ") || "none")),
    ruleStatsBox(r.id, st))));
}

async function ruleStatsPoll() {
  const st = (await api("GET", "status")).rules;
  for (const box of $$("#rule-list .rl-statbox")) box.replaceWith(ruleStatsBox(box.dataset.rule, st));
}

async function ruleToggle(i) {
  try { restartNote(await ruleSave(l => { l[i].enabled = !l[i].enabled; })); ruleList((await api("GET", "status")).rules); }
  catch (e) { banner("Not saved: " + ((e.body && e.body.fields || []).map(x => x.field + ": " + x.error).join("; ") || e.message)); }
}

async function ruleDelete(i) {
  const id = cfg.rules[i].id;
  if (!confirm(`Delete rule ${id}? Its window state and counters are lost.`)) return;
  try {
    restartNote(await ruleSave(l => { l.splice(i, 1); }));
    if (ruleEditing === i) ruleClose(); else if (ruleEditing > i) ruleEditing--;
    ruleList((await api("GET", "status")).rules);
  } catch (e) { banner("Not deleted: " + e.message); }
}

async function loadRules() {
  await loadConfig();
  ruleList((await api("GET", "status")).rules);
  poll(ruleStatsPoll, 2000);
}

$("#rule-add").addEventListener("click", () => ruleOpen(-1));
$("#rule-cancel").addEventListener("click", ruleClose);
$("#rule-action-add").addEventListener("click", () => {
  const all = ruleActionsRead(), kind = $("#rule-action-kind").value;
  ruleActionsSeen = all;
  all.push({ [kind]: kind === "republish" || kind === "uplink" ? { qos: 1 } : {} });
  ruleActionsShow(all);
  const boxes = $$("#rule-actions .rl-action");
  const first = $("[data-key]", boxes[boxes.length - 1]);
  if (first) first.focus();
});
$("#rule-sql").addEventListener("input", () => { ruleSQLLines(); });
$("#rule-sql").addEventListener("scroll", () => { $("#rule-form .rl-lines").scrollTop = $("#rule-sql").scrollTop; });

$("#rule-form").addEventListener("submit", async ev => {
  ev.preventDefault();
  const f = ev.target, r = ruleFromForm(), i = ruleIndex();
  showErrors(f);
  ruleSQLError(null);
  const bad = [];
  if (!r.id) bad.push({ field: `rules[${i}].id`, error: "required" });
  else if ((cfg.rules || []).some((x, j) => x.id === r.id && j !== ruleEditing)) bad.push({ field: `rules[${i}].id`, error: `another rule is called ${r.id}` });
  if (!r.sql.trim()) bad.push({ field: `rules[${i}].sql`, error: "required" });
  const fail = err => {
    showErrors(f, err, p => { const h = ruleFieldAt(p); return h && !h.sql ? h : (h ? { words: "SQL" } : null); });
    const sql = (err.body && err.body.fields || err.fields || []).find(x => x.field === `rules[${i}].sql`);
    if (sql) ruleSQLError(sql.error);
  };
  if (bad.length) { fail(clientError(bad)); return; }
  try {
    restartNote(await ruleSave(l => { if (ruleEditing >= 0) l[ruleEditing] = r; else l.push(r); }));
    ruleClose();
    ruleList((await api("GET", "status")).rules);
  } catch (e) { fail(e); }
});

$("#rule-test").addEventListener("submit", async ev => {
  ev.preventDefault();
  const f = ev.target, out = $("#rule-test-out");
  showErrors(f);
  ruleSQLError(null);
  out.replaceChildren();
  const fieldFor = k => k === "topic" ? { input: f.topic, words: "Sample topic" } : k === "sql" ? { words: "SQL" } : null;
  try {
    const r = await api("POST", "rules/test", { sql: $("#rule-sql").value, topic: f.topic.value.trim(), payload: f.payload.value });
    const outs = r.outputs || [];
    out.append(el("p", { class: "ok" }, outs.length === 0 ? "No output: WHERE (or INCASE) left this message out." : `${outs.length} output${outs.length > 1 ? "s" : ""}:`),
      el("ol", { class: "rl-out" }, ...outs.map((o, n) => el("li", { "data-output": String(n) }, el("pre", {}, JSON.stringify(o, null, 2))))));
  } catch (e) {
    showErrors(f, e, fieldFor);
    const sql = (e.body && e.body.fields || []).find(x => x.field === "sql");
    if (sql) ruleSQLError(sql.error);
  }
});

pages.push("rules");
loaders.rules = loadRules;
})();
