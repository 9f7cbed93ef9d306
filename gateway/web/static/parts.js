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

// awaitRestart waits for the gateway to come back (a new start time, or a
// session that is gone: sessions live in memory), then reloads the page.
async function awaitRestart(before) {
  const give = Date.now() + 120000;
  while (Date.now() < give) {
    await new Promise(res => setTimeout(res, 1000));
    try {
      const r = await fetch("api/v1/session", { credentials: "same-origin" });
      if (!r.ok) continue;
      const s = await r.json();
      if (!s.logged_in) { location.reload(); return; }
      const st = await fetch("api/v1/status", { credentials: "same-origin" });
      if (st.ok && (await st.json()).started !== before) { location.reload(); return; }
    } catch { /* down while it restarts */ }
  }
  $("#restart-which").textContent = "The gateway did not come back within 2 minutes: reload the page.";
}

$("#restart-now").addEventListener("click", async () => {
  const which = $("#restart-which").textContent.replace(/^Restart needed: /, "");
  if (!confirm("Restart the gateway now to apply the saved settings (" + which + ")?\n\nClients and devices are disconnected for a few seconds; nothing already accepted is lost.")) return;
  const before = partsStarted;
  try { await api("POST", "restart"); }
  catch (e) { banner("Restart refused: " + e.message); return; }
  partsRestarting = true;
  $("#restart-which").textContent = "Restarting…";
  $("#restart-now").hidden = true;
  awaitRestart(before);
});

pollParts();
setInterval(pollParts, 2000);
