// End-to-end test of the setup page in headless Chromium.
// Usage: node e2e.mjs BASE_URL SCREENSHOT_DIR   (started by TestE2E in Go)
import { chromium } from "playwright-core";
import assert from "node:assert/strict";

const [base, shots] = process.argv.slice(2);
const PASSWORD = "field-tech-2026";
const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox"], headless: true });
const step = name => console.log("e2e: " + name);
const tabs = ["overview", "uplink", "southbound", "broker", "live", "config", "diagnostics"];

// everyTab visits every tab and fails when one scrolls sideways.
async function everyTab(p, size) {
  for (const tab of tabs) {
    if (await p.locator("#menu").isVisible() && await p.locator("nav a[href='#" + tab + "']").isHidden()) await p.click("#menu");
    await p.click(`nav a[href='#${tab}']`);
    await p.locator("#p-" + tab).waitFor();
    await p.waitForTimeout(200);
    const by = await p.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    assert.ok(by <= 0, `${tab} at ${size} scrolls sideways by ${by}px`);
  }
}

try {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const page = await ctx.newPage();
  page.on("pageerror", e => { console.error("page error: " + e.message); process.exitCode = 1; });

  step("first boot asks for a password");
  await page.goto(base + "/");
  await page.locator("#p-setup").waitFor();
  await page.screenshot({ path: `${shots}/setup.png` });
  await page.fill("#setup-form [name=setup_code]", process.env.FIELDGATE_SETUP_CODE || "");
  await page.fill("#setup-form [name=gateway_id]", "plant-7");
  await page.fill("#setup-form [name=password]", PASSWORD);
  await page.fill("#setup-form [name=password2]", PASSWORD);
  await page.click("#setup-form button");

  step("overview");
  await page.locator("#p-overview").waitFor();
  await page.locator("#ov-devices tbody tr").first().waitFor();
  await page.waitForFunction(() => document.querySelector("#rates").textContent !== "");
  assert.equal(await page.textContent("#gwid"), "plant-7");
  await page.screenshot({ path: `${shots}/overview.png`, fullPage: true });

  step("uplink: change the settings and see the status change");
  await page.click("nav a[href='#uplink']");
  await page.locator("#p-uplink").waitFor();
  await page.waitForFunction(() => document.querySelector("#up-status").textContent.includes("disabled"));
  await page.check("#uplink-form [name=enabled]");
  await page.click("#add-server");
  await page.fill("#servers tbody tr:last-child [name=host]", "cloud.example.net");
  await page.fill("#uplink-form [name=password]", "cloud-pw");
  await page.click("#uplink-form button[type=submit]");
  await page.locator("#banner", { hasText: "Saved" }).waitFor();
  await page.locator("#up-status", { hasText: "cloud.example.net" }).waitFor();
  await page.locator("#up-status .on", { hasText: "connected" }).waitFor();
  await page.screenshot({ path: `${shots}/uplink.png`, fullPage: true });

  step("uplink: a bad setting is refused with the field named");
  await page.fill("#servers tbody tr:last-child [name=host]", "");
  await page.click("#uplink-form button[type=submit]");
  await page.locator("#uplink-form .errs li", { hasText: "Server 1, host" }).waitFor();
  // The error is also shown under the field it is about.
  await page.locator("#servers tbody tr:last-child [name=host][aria-invalid=true]").waitFor();

  step("southbound");
  await page.click("nav a[href='#southbound']");
  await page.locator("#p-southbound").waitFor();
  await page.screenshot({ path: `${shots}/southbound.png`, fullPage: true });

  step("broker");
  await page.click("nav a[href='#broker']");
  await page.locator("#clients tbody tr").first().waitFor();
  await page.fill("#user-form [name=username]", "plc-1");
  await page.fill("#user-form [name=password]", "plc-secret");
  await page.click("#user-form button");
  await page.locator("#users tbody tr", { hasText: "plc-1" }).waitFor();
  assert.ok(!(await page.content()).includes("$2a$"), "a password hash is shown");
  await page.screenshot({ path: `${shots}/broker.png`, fullPage: true });

  step("live messages");
  await page.click("nav a[href='#live']");
  await page.fill("#live-form [name=filter]", "plant/#");
  await page.click("#live-form button[type=submit]");
  await page.locator("#live-list li", { hasText: "plant/line1/temp" }).first().waitFor();
  await page.locator("#live-list li", { hasText: "plant/line1/temp" }).first().click();
  await page.locator("#live-view", { hasText: '"celsius"' }).waitFor();
  await page.click("#live-pause");
  await page.screenshot({ path: `${shots}/live.png`, fullPage: true });

  step("config: a bad upload names the field");
  await page.click("nav a[href='#config']");
  await page.setInputFiles("#upload-form [name=file]", { name: "bad.yaml", mimeType: "application/yaml", buffer: Buffer.from("version: 1\nbroker:\n  limits:\n    max_packet_size: 5\n") });
  await page.click("#upload-form button[type=submit]");
  await page.locator("#upload-form .errs li", { hasText: "broker.limits.max_packet_size" }).waitFor();
  await page.screenshot({ path: `${shots}/config.png`, fullPage: true });
  // A good file is checked and its changes shown before they are applied.
  const saved = await (await page.request.get(base + "/api/v1/config.yaml")).text();
  assert.match(saved, /publish_burst: \d+/);
  await page.setInputFiles("#upload-form [name=file]", { name: "good.yaml", mimeType: "application/yaml", buffer: Buffer.from(saved.replace(/publish_burst: \d+/, "publish_burst: 777")) });
  await page.click("#upload-form button[type=submit]");
  await page.locator("#upload-diff", { hasText: "+ " }).waitFor();
  assert.match(await page.textContent("#upload-diff"), /\+ .*publish_burst: 777/);
  await page.click("#upload-apply");
  await page.locator("#upload-form .ok", { hasText: "Applied" }).waitFor();
  await page.fill("#site-form [name=id]", "plant 8");
  await page.click("#site-form button");
  await page.locator("#site-form .ferr", { hasText: "no spaces" }).waitFor();
  await page.fill("#site-form [name=id]", "plant-8");
  await page.click("#site-form button");
  await page.locator("#banner", { hasText: "Saved" }).waitFor();
  await page.locator("#gwid", { hasText: "plant-8" }).waitFor();

  step("diagnostics");
  await page.click("nav a[href='#diagnostics']");
  await page.locator("#logs tbody tr").first().waitFor();
  await page.screenshot({ path: `${shots}/diagnostics.png`, fullPage: true });

  step("no tab scrolls sideways at 1280×860");
  await everyTab(page, "1280×860");

  step("phone-sized screen");
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  const p2 = await phone.newPage();
  await p2.goto(base + "/");
  await p2.fill("#login-form [name=password]", PASSWORD);
  await p2.click("#login-form button");
  await p2.locator("#ov-devices tbody tr").first().waitFor();
  const overflow = await p2.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, "the page scrolls sideways on a phone by " + overflow + "px");
  await p2.screenshot({ path: `${shots}/phone-overview.png` });
  await p2.click("#menu");
  await p2.screenshot({ path: `${shots}/phone-menu.png` });
  await everyTab(p2, "390×844");

  step("logout, then wrong passwords lock out");
  await page.click("#logout");
  await page.locator("#p-login").waitFor();
  let msg = "";
  for (let i = 0; i < 5 && !msg.includes("too many"); i++) {
    await page.fill("#login-form [name=password]", "wrong-" + i);
    await page.evaluate(() => { document.querySelector("#login-form .err").textContent = ""; });
    await page.click("#login-form button");
    await page.waitForFunction(() => document.querySelector("#login-form .err").textContent !== "");
    msg = await page.textContent("#login-form .err");
  }
  assert.match(msg, /too many wrong passwords/);
  await page.fill("#login-form [name=password]", PASSWORD);
  await page.evaluate(() => { document.querySelector("#login-form .err").textContent = ""; });
  await page.click("#login-form button");
  await page.waitForFunction(() => document.querySelector("#login-form .err").textContent.includes("wait"));
  assert.ok(await page.locator("#p-login").isVisible(), "the right password got in during the lockout");
  await page.screenshot({ path: `${shots}/lockout.png` });
  step("done");
} finally {
  await browser.close();
}
