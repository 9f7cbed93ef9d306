// End-to-end test of the setup page against the real fieldgate binary, in
// headless Chromium. Started by TestE2EWebPage (gateway/web_e2e_test.go):
//
//   node real.mjs BASE_URL SCREENSHOT_DIR MODBUS_ADDR CLOUD_PORT
//
// MODBUS_ADDR is a Modbus TCP simulator run by the Go test (holding
// registers 0: 215, 1-2: FLOAT32 230.5, 3: 7); CLOUD_PORT is the MQTT TCP
// port of a second fieldgate standing in for the cloud. The Go test checks
// afterwards what only it can see: the register the page wrote and the
// messages the cloud received.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";

const [base, shots, modbusAddr, cloudPort] = process.argv.slice(2);
const PASSWORD = "field-tech-2026";
const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox"], headless: true });
const step = name => console.log("real e2e: " + name);
const T = { timeout: 15000 };

// banner waits for the "Saved" banner that follows a change.
async function saved(page) {
  await page.locator("#banner", { hasText: "Saved" }).waitFor(T);
  await page.evaluate(() => { document.querySelector("#banner").hidden = true; document.querySelector("#banner").textContent = ""; });
}

let page;
try {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  page = await ctx.newPage();
  page.setDefaultTimeout(15000);
  page.on("pageerror", e => { console.error("page error: " + e.message); process.exitCode = 1; });

  step("first boot asks for a password and the site name");
  await page.goto(base + "/");
  await page.locator("#p-setup").waitFor();
  await page.screenshot({ path: `${shots}/setup.png` });
  await page.fill("#setup-form [name=gateway_id]", "plant-7");
  await page.fill("#setup-form [name=password]", PASSWORD);
  await page.fill("#setup-form [name=password2]", PASSWORD);
  await page.click("#setup-form button");
  await page.locator("#p-overview").waitFor();
  await page.locator("#gwid", { hasText: "plant-7" }).waitFor();
  await page.locator("#ov-gw dd", { hasText: "plant-7" }).first().waitFor();

  step("southbound: add a Modbus TCP device pointing at the simulator");
  await page.click("nav a[href='#southbound']");
  await page.locator("#p-southbound").waitFor();
  await page.click("#sb-add");
  const f = page.locator("#dev-form");
  await f.locator("[name=device]").fill("meter1");
  await f.locator("[name=conn]").selectOption("tcp");
  await f.locator("[name='tcp.address']").fill(modbusAddr);
  await f.locator("[name=unit_id]").fill("1");
  await f.locator("[name=interval]").fill("500ms");
  const point = async (i, p) => {
    if (i > 0) await page.click("#add-point");
    const row = page.locator("#points tbody tr").nth(i);
    await row.locator("[name=name]").fill(p.name);
    await row.locator("[name=register]").selectOption(p.register);
    await row.locator("[name=address]").fill(String(p.address));
    await row.locator("[name=type]").selectOption(p.type);
    await row.locator("[name=byte_order]").selectOption("ABCD");
    await row.locator("[name=scale]").fill(String(p.scale ?? 1));
    await row.locator("[name=unit]").fill(p.unit ?? "");
    if (p.writable) await row.locator("[name=writable]").check();
  };
  await point(0, { name: "temp", register: "holding", address: 0, type: "INT16", scale: 0.1, unit: "°C" });
  await point(1, { name: "voltage", register: "holding", address: 1, type: "FLOAT32", unit: "V" });
  await point(2, { name: "setpoint", register: "holding", address: 3, type: "UINT16", writable: true });
  await f.locator("button[type=submit]").click();
  await saved(page);
  const card = page.locator("#sb-devices [data-device=meter1]");
  await card.waitFor();
  // The page refreshes the device's state: the poller reports it online.
  await card.locator(".state.on", { hasText: "online" }).waitFor();

  step("read now shows decoded values and raw registers");
  await card.locator("button", { hasText: "Read now" }).click();
  const temp = page.locator("#reading-table tr[data-point=temp]");
  await temp.locator(".value", { hasText: "21.5" }).waitFor();
  assert.match(await temp.textContent(), /0x00d7/);
  const volt = page.locator("#reading-table tr[data-point=voltage]");
  assert.match(await volt.locator(".value").textContent(), /230\.5 V/);
  assert.match(await volt.textContent(), /0x4366 0x8000/);

  step("write a writable point, and read it back");
  const sp = page.locator("#reading-table tr[data-point=setpoint]");
  await sp.locator("[name=value]").fill("42");
  await sp.locator("button", { hasText: "Write" }).click();
  await sp.locator(".ok", { hasText: "written" }).waitFor();
  await card.locator("button", { hasText: "Read now" }).click();
  await page.locator("#reading-table tr[data-point=setpoint] .value", { hasText: "42" }).waitFor();
  await page.screenshot({ path: `${shots}/southbound.png`, fullPage: true });

  step("overview lists the device online");
  await page.click("nav a[href='#overview']");
  await page.locator("#ov-devices tbody tr", { hasText: "meter1" }).locator(".on").waitFor();
  await page.waitForFunction(() => document.querySelector("#rates").textContent !== "");

  step("live view shows the device's values");
  await page.click("nav a[href='#live']");
  await page.fill("#live-form [name=filter]", "southbound/#");
  await page.click("#live-form button[type=submit]");
  const msg = page.locator("#live-list li", { hasText: "southbound/meter1/temp" }).first();
  await msg.waitFor();
  await msg.click();
  await page.locator("#live-view", { hasText: '"v": 21.5' }).waitFor();
  await page.click("#live-pause");
  await page.screenshot({ path: `${shots}/live.png`, fullPage: true });

  step("uplink: point it at the second fieldgate over TCP");
  await page.click("nav a[href='#uplink']");
  await page.locator("#p-uplink").waitFor();
  await page.locator("#up-status", { hasText: "disabled" }).waitFor();
  const u = page.locator("#uplink-form");
  await u.locator("[name=enabled]").check();
  await u.locator("[name=transport]").selectOption("tcp");
  await page.click("#add-server");
  const srv = page.locator("#servers tbody tr").last();
  await srv.locator("[name=host]").fill("127.0.0.1");
  await srv.locator("[name=quic_port]").fill("0");
  await srv.locator("[name=tls_port]").fill("0");
  await srv.locator("[name=tcp_port]").fill(cloudPort);
  await u.locator("[name=forward]").fill(JSON.stringify([{ filter: "southbound/#", remote_topic: "gateways/{gateway_id}/{topic}", qos: 1 }]));
  await page.click("#uplink-test");
  await page.locator("#uplink-result.ok", { hasText: "Connected" }).waitFor();
  await u.locator("button[type=submit]").click();
  await saved(page);
  await page.locator("#up-status .on", { hasText: "connected" }).waitFor();
  await page.locator("#up-status", { hasText: "127.0.0.1" }).waitFor();
  await page.screenshot({ path: `${shots}/uplink.png`, fullPage: true });

  step("uplink: a wrong port is reported in plain words by test connection");
  await srv.locator("[name=tcp_port]").fill("1");
  await page.click("#uplink-test");
  await page.locator("#uplink-result.err", { hasText: "Failed" }).waitFor();

  step("overview with everything running");
  await page.click("nav a[href='#overview']");
  await page.locator("#ov-uplink .on", { hasText: "connected" }).waitFor();
  await page.locator("#ov-devices tbody tr", { hasText: "meter1" }).locator(".on").waitFor();
  await page.waitForFunction(() => document.querySelector("#rates").textContent !== "");
  await page.screenshot({ path: `${shots}/overview.png`, fullPage: true });

  step("broker and config pages load on the real gateway");
  await page.click("nav a[href='#broker']");
  await page.locator("#clients tbody tr", { hasText: "line-3-hmi" }).waitFor();
  await page.fill("#user-form [name=username]", "plc-1");
  await page.fill("#user-form [name=password]", "plc-secret");
  await page.click("#user-form button");
  await page.locator("#users tbody tr", { hasText: "plc-1" }).waitFor();
  assert.ok(!(await page.content()).includes("$2a$"), "a password hash is shown");
  await page.screenshot({ path: `${shots}/broker.png`, fullPage: true });
  await page.click("nav a[href='#config']");
  await page.setInputFiles("#upload-form [name=file]", { name: "bad.yaml", mimeType: "application/yaml", buffer: Buffer.from("version: 1\nbroker:\n  limits:\n    max_packet_size: 5\n") });
  await page.click("#upload-form button");
  await page.locator("#upload-form .errs li", { hasText: "broker.limits.max_packet_size" }).waitFor();
  await page.screenshot({ path: `${shots}/config.png`, fullPage: true });
  await page.click("nav a[href='#diagnostics']");
  await page.locator("#logs tbody tr").first().waitFor();
  await page.screenshot({ path: `${shots}/diagnostics.png`, fullPage: true });

  step("phone-sized screen");
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  const p2 = await phone.newPage();
  p2.setDefaultTimeout(15000);
  p2.on("pageerror", e => { console.error("page error (phone): " + e.message); process.exitCode = 1; });
  await p2.goto(base + "/");
  await p2.fill("#login-form [name=password]", PASSWORD);
  await p2.click("#login-form button");
  await p2.locator("#ov-devices tbody tr", { hasText: "meter1" }).waitFor();
  await p2.locator("#ov-uplink .on", { hasText: "connected" }).waitFor();
  const overflow = () => p2.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(await overflow() <= 0, "the overview scrolls sideways on a phone");
  await p2.screenshot({ path: `${shots}/phone-overview.png` });
  await p2.click("#menu");
  await p2.screenshot({ path: `${shots}/phone-menu.png` });
  await p2.click("nav a[href='#southbound']");
  await p2.locator("#sb-devices [data-device=meter1] button", { hasText: "Read now" }).click();
  await p2.locator("#reading-table tr[data-point=temp] .value", { hasText: "21.5" }).waitFor();
  assert.ok(await overflow() <= 0, "the southbound page scrolls sideways on a phone");
  await p2.screenshot({ path: `${shots}/phone-southbound.png`, fullPage: true });
  await phone.close();

  step("logout, then wrong passwords lock out");
  await page.click("#logout");
  await page.locator("#p-login").waitFor();
  let text = "";
  for (let i = 0; i < 6 && !text.includes("too many"); i++) {
    await page.fill("#login-form [name=password]", "wrong-" + i);
    await page.evaluate(() => { document.querySelector("#login-form .err").textContent = ""; });
    await page.click("#login-form button");
    await page.waitForFunction(() => document.querySelector("#login-form .err").textContent !== "");
    text = await page.textContent("#login-form .err");
  }
  assert.match(text, /too many wrong passwords/);
  await page.fill("#login-form [name=password]", PASSWORD);
  await page.evaluate(() => { document.querySelector("#login-form .err").textContent = ""; });
  await page.click("#login-form button");
  await page.waitForFunction(() => document.querySelector("#login-form .err").textContent.includes("wait"));
  assert.ok(await page.locator("#p-login").isVisible(), "the right password got in during the lockout");
  await page.screenshot({ path: `${shots}/lockout.png` });
  step("done");
} catch (e) {
  // Say what the page showed: the errors it listed and its banner.
  if (page) {
    const shown = await page.evaluate(() => [...document.querySelectorAll(".errs li, .err, #banner")].map(e => e.textContent).filter(t => t.trim()).join("\n")).catch(() => "");
    console.error("page shows:\n" + shown);
    await page.screenshot({ path: `${shots}/failed.png`, fullPage: true }).catch(() => { });
  }
  throw e;
} finally {
  await browser.close();
}
