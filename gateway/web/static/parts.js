// fieldgate page: the gateway's parts (the Overview card "Parts": state in
// words, last progress, restarts, last error) and the persistent "restart
// needed" marker with its "Restart now" button. Data: GET api/v1/status
// (parts, restart). Uses app.js's helpers ($, el, api, banner).
"use strict";

const partStateWords = {
  running: "running",
  backoff: "failed, restarting soon",
  done: "finished (nothing to do)",
  stopped: "stopped",
  stuck: "stuck, being restarted",
  abandoned: "did not stop, abandoned",
};

let partsStarted = null;   // the gateway's start time, to see a restart come back
let partsRestarting = false;

// fmtAge says how long ago, in seconds, for a person.
function fmtAge(s) {
  if (s < 120) return Math.round(s) + " s";
  if (s < 7200) return Math.round(s / 60) + " min";
  if (s < 172800) return Math.round(s / 3600) + " h";
  return Math.round(s / 86400) + " days";
}

function partState(p) {
  const words = partStateWords[p.state] || p.state;
  return p.healthy ? words : words + " — unhealthy";
}

function renderParts(parts) {
  const body = $("#ov-parts tbody");
  if (!body) return;
  body.replaceChildren(...parts.map(p => el("tr", { "data-part": p.name },
    el("td", {}, p.name),
    el("td", { class: !p.healthy ? "off" : p.state === "running" ? "on" : "" }, partState(p)),
    el("td", {}, p.last_progress ? "last progress " + fmtAge(p.last_progress_age || 0) + " ago" : "—"),
    el("td", {}, String(p.restarts || 0)),
    el("td", { class: "part-err" }, p.last_error || ""))));
}

function renderRestart(r) {
  const m = $("#restart-marker");
  if (!m || partsRestarting) return;
  m.hidden = !(r && r.needed);
  if (m.hidden) return;
  $("#restart-which").textContent = "Restart needed: " + r.parts.join(", ");
  $("#restart-which").title = "Saved settings that wait for a restart:\n" + r.keys.map(k => k.key + " (" + k.part + ")").join("\n");
}

// pollParts reads the status while someone is logged in (the nav shows).
async function pollParts() {
  if ($("#nav").hidden || partsRestarting) return;
  let r;
  try { r = await fetch("api/v1/status", { credentials: "same-origin" }); } catch { return; }
  if (!r.ok) return;
  const s = await r.json();
  partsStarted = s.started;
  renderParts(s.parts || []);
  renderRestart(s.restart);
}

// restartBound is how long (in seconds) the page waits for a restarted
// gateway before it says that it is still not back; it keeps trying after
// that. data-bound on #restart-marker overrides it (the page tests).
const restartBound = 60;

function restartSay(text) { $("#restart-which").textContent = text; }
const restartSleep = ms => new Promise(res => setTimeout(res, ms));

// restartBack asks whether the restarted gateway is back: it answers and
// either the session is gone (sessions live in memory) or its start time
// changed. It returns the session's answer, or null.
async function restartBack(before) {
  try {
    const r = await fetchT("api/v1/session", { credentials: "same-origin" }, 3000);
    if (!r.ok) return null;
    const s = await r.json();
    if (!s.logged_in) return s;
    const st = await fetchT("api/v1/status", { credentials: "same-origin" }, 3000);
    if (st.ok && (await st.json()).started !== before) return s;
  } catch { /* down while it restarts */ }
  return null;
}

// awaitRestart counts down to each attempt to reach the gateway again
// ("Restarting… reconnecting in 3 s", announced by the marker's
// aria-live), says so when it is not back after restartBound seconds and
// keeps trying, then comes back to the tab the user was on: at once when
// the session survived, after the login when it did not.
async function awaitRestart(before, tab) {
  const bound = +($("#restart-marker").dataset.bound || restartBound);
  const t0 = Date.now();
  let wait = 3; // the gateway first stops its parts
  for (;;) {
    for (let n = wait; n > 0; n--) {
      const took = Math.round((Date.now() - t0) / 1000);
      restartSay(took >= bound
        ? `The gateway is still not back after ${took} s — check its power and its logs (journalctl -u fieldgate). Retrying in ${n} s…`
        : `Restarting… reconnecting in ${n} s`);
      await restartSleep(1000);
    }
    const s = await restartBack(before);
    if (s) return restartDone(s, tab, Math.round((Date.now() - t0) / 1000));
    wait = 2;
  }
}

function restartDone(s, tab, took) {
  partsRestarting = false;
  $("#restart-now").hidden = false;
  $("#restart-marker").hidden = true;
  location.hash = "#" + tab;
  if (s.logged_in) {
    banner(`The gateway restarted in ${took} s and is back.`);
    show(tab);
    return;
  }
  loggedIn = false;
  banner(`The gateway restarted in ${took} s: log in again to go on where you were.`);
  show("login");
}

$("#restart-now").addEventListener("click", async () => {
  const which = $("#restart-which").textContent.replace(/^Restart needed: /, "");
  if (!confirm("Restart the gateway now to apply the saved settings (" + which + ")?\n\nClients and devices are disconnected for a few seconds; nothing already accepted is lost.")) return;
  const before = partsStarted;
  const tab = pages.includes(location.hash.slice(1)) ? location.hash.slice(1) : "overview";
  try { await api("POST", "restart"); }
  catch (e) { banner("Restart refused: " + e.message); return; }
  partsRestarting = true;
  stopPolling(); // the tab's polls would only fail while it restarts
  $("#restart-now").hidden = true;
  awaitRestart(before, tab);
});

pollParts();
setInterval(pollParts, 2000);
