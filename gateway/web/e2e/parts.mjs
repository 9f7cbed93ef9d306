// End-to-end test of the page's "Parts" card and "restart needed" marker in
// headless Chromium. Usage: node parts.mjs BASE_URL PASSWORD SCREENSHOT_DIR
// (started by TestE2EParts in Go, against the fake backend, set up already,
// with a listener change saved that waits for a restart).
import { chromium } from "playwright-core";
import assert from "node:assert/strict";

const [base, password, shots] = process.argv.slice(2);
const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox"], headless: true });
const step = name => console.log("parts e2e: " + name);

try {
  const page = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
  page.on("pageerror", e => { console.error("page error: " + e.message); process.exitCode = 1; });

  step("log in: the Parts card says each part's state in words");
  await page.goto(base + "/");
  await page.fill("#login-form [name=password]", password);
  await page.click("#login-form button");
  await page.locator("#ov-parts tr[data-part=uplink]").waitFor();
  const probe = await page.textContent("#ov-parts tr[data-part=probe]");
  assert.match(probe, /running/);
  assert.match(probe, /last progress \d+ s ago/);
  const up = await page.textContent("#ov-parts tr[data-part=uplink]");
  assert.match(up, /failed, restarting soon/);
  assert.match(up, /connection refused/);

  step("a listener change saved before (it needs a restart): the marker says which part, on every page");
  await page.locator("#restart-marker", { hasText: "Restart needed: broker" }).waitFor();
  await page.click("nav a[href='#diagnostics']");
  await page.locator("#p-diagnostics").waitFor();
  assert.ok(await page.locator("#restart-marker").isVisible(), "the marker left with the page");
  await page.screenshot({ path: `${shots}/restart-needed.png` });

  step("Restart now asks first; dismissed, nothing happens");
  let asked = "";
  page.once("dialog", d => { asked = d.message(); d.dismiss(); });
  await page.click("#restart-now");
  assert.match(asked, /Restart the gateway now/);
  assert.ok(await page.locator("#restart-marker").isVisible());

  step("confirmed: the gateway restarts and the marker goes away");
  page.once("dialog", d => d.accept());
  await page.click("#restart-now");
  await page.locator("#restart-marker").waitFor({ state: "hidden", timeout: 20000 });
  // The page reloaded itself once the gateway was back; a fresh status
  // still has nothing pending.
  await page.waitForResponse(r => r.url().endsWith("/api/v1/status"));
  assert.ok(await page.locator("#restart-marker").isHidden(), "the marker came back after the restart");
  step("done");
} finally {
  await browser.close();
}
