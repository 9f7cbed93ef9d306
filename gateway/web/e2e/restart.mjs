// "Restart now" against the real fieldgate binary, in headless Chromium.
// Started by TestE2EWebRestart (gateway/restart_e2e_test.go):
//
//   node restart.mjs BASE_URL SCREENSHOT_DIR CLOSED_ADDR
//
// CLOSED_ADDR is a loopback address where nothing listens. First the
// Overview's history: the range and series chosen are kept across a
// reload, and the chart draws the gateway's samples. Then "read before
// save" of a device at CLOSED_ADDR: the gateway's error comes in words at
// the address's input, never as a Go error. Then the page saves a setting that waits for a restart, the technician
// presses "Restart now" on the Broker tab: a countdown is shown (and
// announced), the gateway executes itself again, and while it is kept out
// of reach (the page's requests to it are dropped here) longer than the
// page's bound the page says it is still not back; once it answers, the
// page asks for the password (sessions live in memory) and comes back to
// the Broker tab with nothing pending. At 390×844, where the marker must
// not make the page scroll sideways; then every tab at 360 px wide.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";

const [base, shots, closedAddr] = process.argv.slice(2);
const PASSWORD = "field-tech-2026";
const step = name => console.log("restart e2e: " + name);
const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox"], headless: true });
let page;
try {
  const ctx = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  page = await ctx.newPage();
  page.setDefaultTimeout(20000);
  page.on("pageerror", e => { console.error("page error: " + e.message); process.exitCode = 1; });
  page.on("dialog", d => d.accept());

  step("first boot, then the Broker tab");
  await page.goto(base + "/");
  await page.locator("#p-setup").waitFor();
  await page.fill("#setup-form [name=setup_code]", process.env.FIELDGATE_SETUP_CODE || "");
  await page.fill("#setup-form [name=password]", PASSWORD);
  await page.fill("#setup-form [name=password2]", PASSWORD);
  await page.click("#setup-form button");
  await page.locator("#p-overview").waitFor({ timeout: 90000 }); // bcrypt at cost 12 on a loaded machine

  step("the overview's history: range and series kept across a reload, samples from the gateway");
  await page.selectOption("#chart-range", "1h");
  await page.selectOption("#chart-series", "clients");
  const drawn = what => page.waitForFunction(w => new RegExp(w + ": [1-9]\\d* samples").test(document.querySelector("#chart").getAttribute("aria-label")), what, { timeout: 30000 });
  await drawn("connected clients, last hour");
  await page.reload();
  await page.locator("#p-overview").waitFor();
  assert.equal(await page.inputValue("#chart-range"), "1h", "the range is lost on reload");
  assert.equal(await page.inputValue("#chart-series"), "clients", "the series is lost on reload");
  await drawn("connected clients, last hour");
  const hist = await page.evaluate(() => api("GET", "history?range=24h"));
  assert.ok(hist.samples.length >= 1 && ["in", "out", "clients", "cpu", "memory", "outbox"].every(k => k in hist.samples[0]), JSON.stringify(hist).slice(0, 300));
  await page.selectOption("#chart-series", "msgs");

  step("read before save of a device that does not answer: words at the address input");
  await page.evaluate(() => { location.hash = "#southbound"; });
  await page.locator("#p-southbound").waitFor();
  await page.click("#sb-add");
  const f = page.locator("#dev-form");
  await f.locator("[name=device]").fill("plc9");
  await f.locator("[name=conn]").selectOption("tcp");
  await f.locator("[name='tcp.address']").fill(closedAddr);
  const row = page.locator("#points tbody tr").nth(0);
  await row.locator("[name=name]").fill("temp");
  await row.locator("[name=ref]").fill("40001");
  await row.locator("[name=scale]").fill("1");
  await page.click("#dev-probe");
  await f.locator("[name='tcp.address'][aria-invalid=true]").waitFor();
  await f.locator(".ferr", { hasText: "Cannot reach " + closedAddr + ": connection refused — is the device on" }).waitFor();
  const text = await page.evaluate(() => document.body.innerText);
  assert.ok(!/dial tcp|devices\[\d+\]/.test(text), "a Go error or a config path is shown: " + text.slice(0, 500));
  if (shots) await page.screenshot({ path: `${shots}/phone-device-error.png` });

  await page.evaluate(() => { location.hash = "#broker"; });
  await page.locator("#p-broker").waitFor();

  step("a setting that waits for a restart shows the marker");
  await page.evaluate(() => api("PUT", "config/broker.sys_interval", "3s"));
  await page.locator("#restart-marker", { hasText: "Restart needed: broker" }).waitFor();
  assert.equal(await page.getAttribute("#restart-marker", "aria-live"), "polite");

  step("Restart now: a countdown, then 'still not back' while the gateway is out of reach");
  await page.evaluate(() => { document.querySelector("#restart-marker").dataset.bound = "5"; });
  const before = await page.evaluate(() => partsStarted);
  await page.click("#restart-now");
  // From here the page's requests to the gateway are dropped, as if it
  // were slow to come back.
  const drop = route => route.abort("connectionrefused");
  await page.route("**/api/v1/session", drop);
  await page.route("**/api/v1/status", drop);
  await page.locator("#restart-which", { hasText: /^Restarting… reconnecting in [1-3] s$/ }).waitFor();
  const seen = new Set();
  for (let i = 0; i < 30 && seen.size < 2; i++) {
    seen.add(await page.textContent("#restart-which"));
    await page.waitForTimeout(200);
  }
  assert.ok(seen.size >= 2, "the countdown does not count: " + [...seen].join(" | "));
  assert.ok(await page.locator("#restart-now").isHidden(), "the button stays during the restart");
  if (shots) await page.screenshot({ path: `${shots}/restart.png` });
  await page.locator("#restart-which", { hasText: /still not back after \d+ s — check its power and its logs/ }).waitFor();
  assert.ok(await page.locator("#offline").isHidden(), "the unreachable banner competes with the restart's");
  // It keeps retrying: the countdown goes on.
  await page.locator("#restart-which", { hasText: /Retrying in 1 s/ }).waitFor();

  step("the gateway answers again: login, then the same tab, nothing pending");
  await page.unroute("**/api/v1/session", drop);
  await page.unroute("**/api/v1/status", drop);
  await page.locator("#p-login").waitFor({ timeout: 30000 });
  await page.locator("#banner", { hasText: /restarted in \d+ s: log in again/ }).waitFor();
  await page.fill("#login-form [name=password]", PASSWORD);
  await page.click("#login-form button");
  await page.locator("#p-broker").waitFor({ timeout: 90000 });
  assert.equal(await page.evaluate(() => location.hash), "#broker");
  const after = await page.evaluate(() => api("GET", "status"));
  assert.notEqual(after.started, before, "the gateway did not start again");
  assert.equal(after.restart.needed, false, "a setting still waits after the restart");
  await page.waitForTimeout(2500); // a poll of the marker
  assert.ok(await page.locator("#restart-marker").isHidden(), "the marker stays after the restart");
  const by = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.ok(by <= 0, `the page scrolls sideways by ${by}px`);

  step("360 px wide: no tab scrolls sideways");
  await page.setViewportSize({ width: 360, height: 740 });
  const tabs = await page.evaluate(() => [...document.querySelectorAll("nav a[href^='#']")].map(a => a.getAttribute("href").slice(1)));
  for (const tab of tabs) {
    if (await page.locator("nav a[href='#" + tab + "']").isHidden()) await page.click("#menu");
    await page.click(`nav a[href='#${tab}']`);
    await page.locator("#p-" + tab).waitFor();
    await page.waitForTimeout(300); // its first data
    const o = await page.evaluate(() => {
      const w = document.documentElement.clientWidth;
      const wide = [...document.querySelectorAll("main *, header *")].filter(e => e.getBoundingClientRect().right > w + 1 && e.offsetParent !== null && !e.closest(".scroll"))
        .slice(0, 5).map(e => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") + " right=" + Math.round(e.getBoundingClientRect().right));
      return { by: document.documentElement.scrollWidth - w, wide };
    });
    assert.ok(o.by <= 0, `${tab} at 360 px scrolls sideways by ${o.by}px: ${o.wide.join(", ")}`);
  }
  step("done");
} catch (e) {
  if (page) console.error("page shows:\n" + await page.evaluate(() => [...document.querySelectorAll("#restart-which, #banner, .err")].map(e => e.textContent).filter(t => t.trim()).join("\n")).catch(() => ""));
  throw e;
} finally {
  await browser.close();
}
