// fieldgate page: the first-boot wizard's setup code and LAN access
// question (with the listeners' exposure shown plainly), and the factory
// reset. Loaded after app.js, whose helpers ($, el, api, banner) it uses.
"use strict";

// setupLAN returns the wizard's LAN answer for POST /api/v1/setup.
window.setupLAN = function () {
  const box = $("#setup-lan");
  if (!box || !box.dataset.loaded) return undefined;
  const anonymous = $("[name=lan_anonymous]", box).checked;
  const listeners = $$("[name=lan_listener]", box).filter(c => c.checked).map(c => c.value);
  return { anonymous, listeners: anonymous ? listeners : [] };
};

// exposureTable shows which listeners accept anonymous clients on which
// addresses.
function exposureTable(rows) {
  return el("table", { class: "exposure" },
    el("thead", {}, el("tr", {}, el("th", {}, "Listener"), el("th", {}, "Address"), el("th", {}, "Anonymous clients"))),
    el("tbody", {}, rows.filter(r => r.enabled).map(r => el("tr", {},
      el("td", {}, r.kind),
      el("td", {}, r.address + (r.everywhere ? " (every network interface)" : "")),
      el("td", {}, r.anonymous
        ? "accepted (may read and publish, except " + (r.denied_to_anonymous || []).join(", ") + ")"
        : "refused: a username is needed")))));
}

async function loadSetupLAN() {
  const box = $("#setup-lan");
  if (!box) return;
  const s = await api("GET", "session");
  if (!s.setup_required) return;
  if (s.setup_code_file) $("#setup-code-file").textContent = s.setup_code_file;
  const e = await api("GET", "exposure");
  const rows = e.listeners || [];
  const anyAnon = rows.some(r => r.enabled && r.anonymous);
  const list = el("div", { class: "row" }, rows.filter(r => r.enabled).map(r =>
    el("label", { class: "inline" }, el("input", { type: "checkbox", name: "lan_listener", value: r.listener, checked: r.anonymous }), " " + r.kind)));
  const allow = el("input", { type: "checkbox", name: "lan_anonymous", checked: anyAnon });
  const sync = () => { list.hidden = !allow.checked; };
  allow.addEventListener("change", sync);
  box.replaceChildren(
    el("h2", {}, "Devices on the LAN"),
    el("p", {}, "Right now:"),
    exposureTable(rows),
    el("label", { class: "inline" }, allow, " Let devices connect without a username (anonymous) through:"),
    list,
    el("p", { class: "hint" }, "Anonymous devices can never write to field devices (southbound/…/set topics): that needs a broker user. Add users on the Broker page."));
  sync();
  box.dataset.loaded = "1";
}

// The factory reset card on the diagnostics page.
function resetCard() {
  const card = $("#factory-reset");
  if (!card) return;
  const input = el("input", { name: "confirm", autocomplete: "off", placeholder: "gateway name" });
  const err = el("p", { class: "err" });
  const form = el("form", { id: "reset-form" },
    el("label", {}, "Type the gateway name to confirm ", input), err,
    el("button", { type: "submit", class: "danger" }, "Reset to factory settings"));
  form.addEventListener("submit", async ev => {
    ev.preventDefault();
    err.textContent = "";
    try {
      await api("POST", "factory-reset", { confirm: input.value });
      banner("Factory reset: the gateway is restarting as new. Reload this page in a minute; it will ask for the new setup code.");
    } catch (e) { err.textContent = (e.body.fields || []).map(x => x.error).join("; ") || e.message; }
  });
  card.replaceChildren(
    el("h2", {}, "Factory reset"),
    el("p", {}, "Wipes the saved config, the admin password and tokens, and all data (the outbox too), then restarts the gateway as on its first boot, with a new setup code on the serial console."),
    form);
}

// The update card: a bundle by upload or URL, installed by RAUC into the
// other slot; progress while it installs. Shown only when the gateway has
// an updater.
async function updateCard() {
  const card = $("#update-card");
  if (!card) return;
  // Only once logged in: a 401 would send the page to the login form.
  const session = await api("GET", "session").catch(() => ({}));
  if (!session.logged_in) return;
  let s;
  try { s = await api("GET", "update"); } catch (e) {
    // 502: the gateway has an updater but RAUC does not answer: say why.
    if (e.status === 502) { card.hidden = false; card.replaceChildren(el("h2", {}, "Update"), el("p", { class: "err" }, e.message)); }
    return;
  }
  if (!s.available) return;
  card.hidden = false;
  const state = el("p");
  const file = el("input", { type: "file", accept: ".raucb" });
  const url = el("input", { name: "url", placeholder: "https://…/fieldgate.raucb" });
  const err = el("p", { class: "err" });
  const reboot = el("button", { hidden: true, onclick: async () => {
    try { await api("POST", "update/reboot", {}); banner("Rebooting into the update: the page comes back in a few minutes."); }
    catch (e) { err.textContent = e.message; }
  } }, "Reboot into the update");
  const show = st => {
    reboot.hidden = !(st.operation === "idle" && !st.last_error && st.progress.percent === 100);
    state.textContent = st.operation === "installing"
      ? `Installing: ${st.progress.percent} % ${st.progress.message}`
      : (st.last_error ? "Last update failed: " + st.last_error
        : `Running from slot ${st.boot_slot || "?"}` + (st.marked_good ? ", marked good" : ", not yet marked good") +
          (st.progress.percent === 100 ? ". An update is installed: reboot to boot it." : "."));
    return st.operation === "installing";
  };
  const poll = async () => {
    const r = await api("GET", "update");
    if (show(r.status)) setTimeout(() => poll().catch(e => { err.textContent = e.message; }), 1000);
  };
  const start = async body => {
    err.textContent = "";
    try { await (body instanceof File ? api("POST", "update", body, "application/octet-stream") : api("POST", "update", body)); await poll(); }
    catch (e) { err.textContent = (e.body.fields || []).map(x => x.error).join("; ") || e.message; }
  };
  card.replaceChildren(el("h2", {}, "Update"),
    el("p", {}, "A signed RAUC bundle is installed into the other system slot; the gateway marks it good only after it has run healthy for a while, else the board falls back to this one."),
    state, reboot,
    el("div", { class: "row" }, file, el("button", { onclick: () => file.files[0] && start(file.files[0]) }, "Upload and install")),
    el("div", { class: "row" }, url, el("button", { onclick: () => start({ url: url.value }) }, "Install from URL")),
    err);
  show(s.status);
}

resetCard();
updateCard();
window.addEventListener("hashchange", () => { if (location.hash === "#diagnostics") updateCard(); });
loadSetupLAN().catch(e => banner(e.message));
