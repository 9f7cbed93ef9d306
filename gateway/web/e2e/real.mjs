// End-to-end test of the setup page against the real fieldgate binary, in
// headless Chromium. Started by TestE2EWebPage (gateway/web_e2e_test.go):
//
//   node real.mjs BASE_URL SCREENSHOT_DIR MODBUS_ADDR CLOUD_PORT
//
// MODBUS_ADDR is a Modbus TCP simulator run by the Go test (holding
// registers 0: 215, 1-2: FLOAT32 230.5, 3: 7, zeros at 100-999; coil 0);
// CLOUD_PORT is the MQTT TCP port of a second fieldgate standing in for the
// cloud. The script asks the Go test to stop and start the gateway by
// printing "@@STOP" / "@@START" and reading the answer on stdin. The Go
// test checks afterwards what only it can see: the register and coil the
// page wrote and the messages the cloud received.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import readline from "node:readline";

const [base, shots, modbusAddr, cloudPort] = process.argv.slice(2);
const PASSWORD = "field-tech-2026";
const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox"], headless: true });
const step = name => console.log("real e2e: " + name);
const T = { timeout: 15000 };
// A password check (bcrypt at cost 12 in the -race build) can take many
// seconds on a loaded test machine: the steps right after one wait longer.
const AFTER_PASSWORD = { timeout: 90000 };
const tabs = ["overview", "uplink", "southbound", "broker", "live", "rules", "config", "diagnostics"];

// ask prints a control line for the Go test and waits for its answer.
const answers = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function ask(what) {
  console.log(what);
  const r = await answers.next();
  return r.value;
}

// saved waits for the "Saved" banner that follows a change.
async function saved(page) {
  await page.locator("#banner", { hasText: "Saved" }).waitFor(T);
  await page.evaluate(() => { document.querySelector("#banner").hidden = true; document.querySelector("#banner").textContent = ""; });
}

// overflow is how far the page scrolls sideways (0 when it does not), and
// which elements stick out, to say what broke.
async function overflow(p) {
  return p.evaluate(() => {
    const w = document.documentElement.clientWidth;
    const wide = [...document.querySelectorAll("main *, header *")].filter(e => e.getBoundingClientRect().right > w + 1 && e.offsetParent !== null && !e.closest(".scroll"))
      .slice(0, 5).map(e => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") + (e.className && typeof e.className === "string" ? "." + e.className.split(" ").join(".") : "") + " right=" + Math.round(e.getBoundingClientRect().right));
    return { by: document.documentElement.scrollWidth - w, wide };
  });
}
async function noOverflow(p, where) {
  const o = await overflow(p);
  assert.ok(o.by <= 0, `${where} scrolls sideways by ${o.by}px: ${o.wide.join(", ")}`);
}

// noFloatNoise fails when a number on the page shows binary float noise.
async function noFloatNoise(p, where) {
  const text = await p.evaluate(() => document.body.innerText);
  const m = text.match(/\d\.\d*(0{6,}|9{6,})\d/);
  assert.ok(!m, `${where} shows float noise: ${m && m[0]}`);
}

// a11y checks what a screen reader and a thumb need on the shown page:
// every visible input labelled, controls at least 40 px high.
async function a11y(p, where) {
  const bad = await p.evaluate(() => {
    const out = [];
    for (const e of document.querySelectorAll("input, select, textarea, button, nav a")) {
      if (e.offsetParent === null || e.type === "hidden" || e.type === "file") continue;
      const r = e.getBoundingClientRect();
      const labelled = e.labels && e.labels.length || e.getAttribute("aria-label") || e.tagName === "BUTTON" || e.tagName === "A";
      if (!labelled) out.push("unlabelled " + e.tagName.toLowerCase() + "[name=" + e.name + "]");
      const target = e.type === "checkbox" ? (e.closest("label") || e).getBoundingClientRect() : r;
      if (target.height < 39.5) out.push("small " + e.tagName.toLowerCase() + "[name=" + (e.name || e.textContent.trim().slice(0, 20)) + "] " + Math.round(target.height) + "px");
    }
    return out.slice(0, 8);
  });
  assert.deepEqual(bad, [], where + ": " + bad.join("; "));
}

// everyTab visits every tab and checks it fits the screen.
async function everyTab(p, size) {
  for (const tab of tabs) {
    if (await p.locator("#menu").isVisible() && await p.locator("nav a[href='#" + tab + "']").isHidden()) await p.click("#menu");
    await p.click(`nav a[href='#${tab}']`);
    await p.locator("#p-" + tab).waitFor();
    await p.waitForTimeout(300); // its first data
    await noOverflow(p, `${tab} at ${size}`);
    await noFloatNoise(p, `${tab} at ${size}`);
    await a11y(p, `${tab} at ${size}`);
  }
}

// A tag file of 200 points, two of them wrong: line 51 (an address that
// is not one) and line 151 (an unknown data type).
function tagCSV() {
  const rows = ["name,address,data_type,byte_order,scale,offset,unit,access,group,description,deadband"];
  for (let i = 1; i <= 200; i++) {
    const addr = i === 50 ? "4x0001" : String(40100 + i);
    const type = i === 150 ? "FLOAT99" : "UINT16";
    rows.push(`p${String(i).padStart(3, "0")},${addr},${type},ABCD,0.1,,°C,RO,,point ${i},`);
  }
  return rows.join("\n") + "\n";
}

// shot saves a screenshot from the top of the page (a sticky header
// stays at the top of a full-page picture).
async function shot(p, name, fullPage = true) {
  await p.evaluate(() => window.scrollTo(0, 0));
  await p.screenshot({ path: `${shots}/${name}.png`, fullPage });
}

let page;
try {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  page = await ctx.newPage();
  page.setDefaultTimeout(15000);
  page.on("pageerror", e => { console.error("page error: " + e.message); process.exitCode = 1; });

  step("first boot asks for a password and the site name");
  await page.goto(base + "/");
  await page.locator("#p-setup").waitFor();
  await page.screenshot({ path: `${shots}/setup.png` });
  await page.fill("#setup-form [name=setup_code]", process.env.FIELDGATE_SETUP_CODE || "");
  await page.fill("#setup-form [name=gateway_id]", "plant-7");
  await page.fill("#setup-form [name=password]", PASSWORD);
  await page.fill("#setup-form [name=password2]", PASSWORD);
  await page.click("#setup-form button");
  await page.locator("#p-overview").waitFor(AFTER_PASSWORD);
  await page.locator("#gwid", { hasText: "plant-7" }).waitFor();
  await page.locator("#ov-gw dd", { hasText: "plant-7" }).first().waitFor();
  // Clients at zero show 0, not a blank card.
  await page.locator("#ov-clients dd", { hasText: /^\d+$/ }).first().waitFor();

  step("southbound: a Modbus TCP device with addresses as the manual prints them");
  await page.click("nav a[href='#southbound']");
  await page.locator("#p-southbound").waitFor();
  await page.click("#sb-add");
  const f = page.locator("#dev-form");
  await f.locator("[name=device]").fill("meter1");
  await f.locator("[name=conn]").selectOption("tcp");
  // A typo in the address is refused in words before anything is sent.
  await f.locator("[name='tcp.address']").fill("192.168.1.300:502");
  await f.locator("[name=interval]").fill("500ms");
  const point = async (i, p) => {
    if (i > 0) await page.click("#add-point");
    const row = page.locator("#points tbody tr").nth(i);
    await row.locator("[name=name]").fill(p.name);
    await row.locator("[name=ref]").fill(p.ref);
    if (p.type) await row.locator("[name=type]").selectOption(p.type);
    await row.locator("[name=scale]").fill(String(p.scale ?? 1));
    await row.locator("[name=unit]").fill(p.unit ?? "");
    if (p.writable) await row.locator("[name=writable]").check();
  };
  await point(0, { name: "temp", ref: "40001", type: "INT16", scale: "0,1", unit: "°C" });
  // The manual's address is shown as register and 0-based offset too.
  await page.locator("#points tbody tr").nth(0).locator(".ref-hint", { hasText: "holding register, offset 0" }).waitFor();
  assert.equal(await page.locator("#points tbody tr").nth(0).locator("[name=address]").inputValue(), "0");
  await point(1, { name: "voltage", ref: "40002", type: "FLOAT32", unit: "V" });
  await point(2, { name: "setpoint", ref: "40004", type: "UINT16", writable: true });
  await point(3, { name: "pump", ref: "00001", writable: true });
  assert.equal(await page.locator("#points tbody tr").nth(3).locator("[name=register]").inputValue(), "coil");
  await f.locator("button[type=submit]").click();
  await f.locator(".ferr", { hasText: "192.168.1.300 is not an IPv4 address" }).waitFor();
  await shot(page, "southbound-form");
  await f.locator("[name='tcp.address']").fill(modbusAddr);
  // Read before save: the device answers with the values as typed, nothing saved yet.
  await page.click("#dev-probe");
  await page.locator("#probe-table tr[data-point=temp] .value", { hasText: /^21\.5 °C$/ }).waitFor();
  await page.locator("#probe-table tr[data-point=voltage] .value", { hasText: /^230\.5 V$/ }).waitFor();
  assert.equal(await page.locator("#sb-devices [data-device=meter1]").count(), 0, "read before save saved the device");
  await f.locator("button[type=submit]").click();
  await saved(page);
  const card = page.locator("#sb-devices [data-device=meter1]");
  await card.waitFor();
  await card.locator(".state.on", { hasText: "online" }).waitFor();

  step("the tag table shows live values without float noise, and the device's statistics");
  const row = name => card.locator(`tr[data-point=${name}]`);
  await row("temp").locator(".value", { hasText: /^21\.5 °C$/ }).waitFor();
  await row("voltage").locator(".value", { hasText: /^230\.5 V$/ }).waitFor();
  await row("temp").locator(".quality", { hasText: "good" }).waitFor();
  assert.match(await row("temp").locator(".raw").textContent(), /0x00d7/);
  assert.match(await row("voltage").locator(".raw").textContent(), /0x4366 0x8000/);
  await card.locator(".stats", { hasText: /Round trip p50 [\d.]+ ms, p99 [\d.]+ ms/ }).waitFor();
  // The values refresh on their own: a new timestamp arrives.
  const t0 = await row("temp").locator(".time").textContent();
  await page.waitForFunction(t => document.querySelector("#sb-devices [data-device=meter1] tr[data-point=temp] .time").textContent !== t, t0, T);

  step("search and only bad points");
  await card.locator("[name=search]").fill("volt");
  assert.ok(await row("temp").isHidden() && await row("voltage").isVisible(), "search did not filter");
  await card.locator("[name=search]").fill("");
  await card.locator("[name=only_bad]").check();
  assert.ok(await row("temp").isHidden(), "only bad points shows a good point");
  await card.locator("[name=only_bad]").uncheck();

  step("write from the row, value read back; the pump switched on");
  await row("setpoint").locator("[name=value]").fill("42");
  await row("setpoint").locator("button", { hasText: "Write" }).click();
  await row("setpoint").locator(".ok", { hasText: "written" }).waitFor();
  await row("setpoint").locator(".value", { hasText: /^42$/ }).waitFor();
  await row("pump").locator(".value", { hasText: "off" }).waitFor();
  await row("pump").locator("button.toggle").click();
  await row("pump").locator(".value", { hasText: "on" }).waitFor();
  await row("pump").locator("button.toggle[aria-pressed=true]").waitFor();
  await noFloatNoise(page, "southbound");
  await shot(page, "southbound");

  step("a device from a built-in template");
  await page.click("#sb-from-template");
  const tf = page.locator("#tpl-form");
  await tf.locator("[name=template] option").first().waitFor({ state: "attached" });
  const tcpTemplate = await tf.locator("[name=template] option", { hasText: "sunspec" }).getAttribute("value");
  await tf.locator("[name=template]").selectOption(tcpTemplate);
  await tf.locator("[name=name]").fill("inverter1");
  await tf.locator("[name=address]").fill(modbusAddr);
  await tf.locator("[name=unit_id]").fill("2"); // unit 1 on this address is meter1
  await tf.locator("button[type=submit]").click();
  await saved(page);
  const inv = page.locator("#sb-devices [data-device=inverter1]");
  await inv.waitFor();
  assert.ok(await inv.locator("tbody tr").count() > 5, "the template's points are not listed");

  step("bulk import: 200 tags, two bad rows named by line, the rest applied");
  await page.click("#sb-add");
  await f.locator("[name=device]").fill("bulk");
  await f.locator("[name='tcp.address']").fill(modbusAddr);
  await f.locator("[name=unit_id]").fill("3");
  await f.locator("[name=interval]").fill("5s");
  await page.locator("#points tbody tr").nth(0).locator("[name=name]").fill("first");
  await page.locator("#points tbody tr").nth(0).locator("[name=ref]").fill("40101");
  await f.locator("button[type=submit]").click();
  await saved(page);
  const bulk = page.locator("#sb-devices [data-device=bulk]");
  await bulk.locator("button", { hasText: "Import CSV" }).click();
  await page.setInputFiles("#import-form [name=file]", { name: "tags.csv", mimeType: "text/csv", buffer: Buffer.from(tagCSV()) });
  await page.click("#import-form button[type=submit]");
  await page.locator("#import-summary", { hasText: "200 rows: 198 good, 2 with errors" }).waitFor();
  assert.equal(await page.locator("#import-errors tbody tr").count(), 2);
  assert.match(await page.locator("#import-errors tr[data-line='51']").textContent(), /address/i);
  assert.match(await page.locator("#import-errors tr[data-line='151']").textContent(), /FLOAT99|type/i);
  await shot(page, "import");
  await page.click("#import-apply");
  await page.locator("#import-summary", { hasText: "Applied: 198 points imported" }).waitFor();
  await bulk.locator(".devline", { hasText: "198 points" }).waitFor();
  assert.equal(await bulk.locator("tbody tr").count(), 198);
  assert.equal(await bulk.locator("tbody tr:visible").count(), 50, "a long tag list is not cut to 50 rows");
  await bulk.locator("button", { hasText: "Show all 198 points" }).click();
  assert.equal(await bulk.locator("tbody tr:visible").count(), 198);
  const exported = await page.request.get(base + "/api/v1/southbound/devices/bulk/tags.csv");
  assert.equal(exported.status(), 200);
  assert.equal((await exported.text()).trim().split("\n").length, 199, "the export does not hold the 198 points");

  step("overview lists the device online, with a chart with axes");
  await page.click("nav a[href='#overview']");
  await page.locator("#ov-devices tbody tr", { hasText: "meter1" }).locator(".on").waitFor();
  await page.waitForFunction(() => document.querySelector("#rates").textContent !== "");

  step("live view shows the device's values; the filter change clears the list");
  await page.click("nav a[href='#live']");
  await page.fill("#live-form [name=filter]", "southbound/#");
  await page.click("#live-form button[type=submit]");
  const msg = page.locator("#live-list li", { hasText: "southbound/meter1/temp" }).first();
  await msg.waitFor();
  await msg.click();
  await page.locator("#live-view", { hasText: '"v": 21.5' }).waitFor();
  await page.fill("#live-form [name=filter]", "plant/#");
  await page.click("#live-form button[type=submit]");
  assert.equal(await page.locator("#live-list li", { hasText: "southbound/" }).count(), 0, "messages of the old filter stay");
  await page.fill("#pub-form [name=topic]", "plant/line1/test");
  await page.fill("#pub-form [name=payload]", '{"v": 21.7}');
  await page.click("#pub-form button[type=submit]");
  await page.locator("#live-list li", { hasText: "plant/line1/test" }).first().waitFor();
  await page.locator("#pub-form .ok", { hasText: "Published" }).waitFor();
  await page.click("#live-pause");
  await shot(page, "live");

  step("uplink: point it at the second fieldgate over TCP, rules in a form");
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
  await page.click("#add-forward");
  const rule = page.locator("#forward-rules .rule").last();
  await rule.locator("[name=filter]").fill("");
  await u.locator("button[type=submit]").click();
  await rule.locator(".ferr", { hasText: "is empty" }).waitFor();
  await u.locator(".errs li", { hasText: "Forward rule 1, local topic filter" }).waitFor();
  await rule.locator("[name=filter]").fill("southbound/#");
  await page.click("#uplink-test");
  await page.locator("#uplink-result.ok", { hasText: "Connected" }).waitFor();
  await u.locator("button[type=submit]").click();
  await saved(page);
  await page.locator("#up-status .on", { hasText: "connected" }).waitFor();
  await page.locator("#up-status", { hasText: "127.0.0.1" }).waitFor();
  await shot(page, "uplink");

  step("uplink: a wrong port is reported in plain words by test connection");
  await srv.locator("[name=tcp_port]").fill("1");
  await page.click("#uplink-test");
  await page.locator("#uplink-result.err", { hasText: "Failed" }).waitFor();
  assert.match(await page.textContent("#uplink-result"), /connection refused \(nothing listens on that port\)/);
  assert.doesNotMatch(await page.textContent("#uplink-result"), /dial tcp/);
  await srv.locator("[name=tcp_port]").fill(cloudPort);

  step("overview with everything running");
  await page.click("nav a[href='#overview']");
  await page.locator("#ov-uplink .on", { hasText: "connected" }).waitFor();
  await page.locator("#ov-devices tbody tr", { hasText: "meter1" }).locator(".on").waitFor();
  await page.waitForFunction(() => document.querySelector("#rates").textContent !== "");
  await shot(page, "overview");

  step("broker: users, access rules in a form");
  await page.click("nav a[href='#broker']");
  await page.locator("#clients tbody tr", { hasText: "line-3-hmi" }).waitFor();
  await page.fill("#user-form [name=username]", "plc-1");
  await page.fill("#user-form [name=password]", "plc-secret");
  await page.click("#user-form button");
  await page.locator("#users tbody tr", { hasText: "plc-1" }).waitFor(AFTER_PASSWORD); // hashed at cost 12
  assert.ok(!(await page.content()).includes("$2a$"), "a password hash is shown");
  await page.click("#add-acl");
  const acl = page.locator("#acl-rules .rule").last();
  await acl.locator("[name=username]").fill("plc-1");
  await acl.locator("[name=topic]").fill("plant/#");
  await page.fill("#adv-form [name='limits.max_packet_size']", "5");
  await page.click("#adv-form button[type=submit]");
  await page.locator("#adv-form .ferr").first().waitFor();
  await page.locator("#adv-form .errs li", { hasText: "Largest packet" }).waitFor();
  await page.fill("#adv-form [name='limits.max_packet_size']", "1048576");
  await page.click("#adv-form button[type=submit]");
  await saved(page);
  await shot(page, "broker");

  step("config and diagnostics");
  await page.click("nav a[href='#config']");
  await page.setInputFiles("#upload-form [name=file]", { name: "bad.yaml", mimeType: "application/yaml", buffer: Buffer.from("version: 1\nbroker:\n  limits:\n    max_packet_size: 5\n") });
  await page.click("#upload-form button[type=submit]");
  await page.locator("#upload-form .errs li", { hasText: "broker.limits.max_packet_size" }).waitFor();
  await shot(page, "config");
  await page.click("nav a[href='#diagnostics']");
  await page.locator("#logs tbody tr").first().waitFor();
  await shot(page, "diagnostics");

  step("no tab scrolls sideways at 1280×800; inputs labelled, targets 40 px");
  await everyTab(page, "1280×800");

  step("phone-sized screen, 390×844: every tab fits");
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  const p2 = await phone.newPage();
  p2.setDefaultTimeout(15000);
  p2.on("pageerror", e => { console.error("page error (phone): " + e.message); process.exitCode = 1; });
  await p2.goto(base + "/");
  await p2.fill("#login-form [name=password]", PASSWORD);
  await p2.click("#login-form button");
  await p2.locator("#ov-devices tbody tr", { hasText: "meter1" }).waitFor(AFTER_PASSWORD);
  await p2.locator("#ov-uplink .on", { hasText: "connected" }).waitFor();
  await noOverflow(p2, "overview on a phone");
  await p2.screenshot({ path: `${shots}/phone-overview.png` });
  await p2.click("#menu");
  await p2.screenshot({ path: `${shots}/phone-menu.png` });
  await everyTab(p2, "390×844");
  await p2.click("#menu");
  await p2.click("nav a[href='#southbound']");
  const pcard = p2.locator("#sb-devices [data-device=meter1]");
  await pcard.locator("tr[data-point=temp] .value", { hasText: "21.5" }).waitFor();
  // The write field of a row is on screen and usable.
  const w = pcard.locator("tr[data-point=setpoint] [name=value]");
  await w.scrollIntoViewIfNeeded();
  const box = await w.boundingBox();
  assert.ok(box && box.x >= 0 && box.x + box.width <= 390, "the write field is off screen: " + JSON.stringify(box));
  await p2.screenshot({ path: `${shots}/phone-southbound.png` });
  await pcard.locator("button", { hasText: "Edit" }).click();
  await p2.locator("#dev-form").waitFor();
  await noOverflow(p2, "the device form on a phone");
  const bo = p2.locator("#points tbody tr").nth(1).locator("[name=byte_order]");
  await bo.scrollIntoViewIfNeeded();
  const bb = await bo.boundingBox();
  assert.ok(bb && bb.x + bb.width <= 390, "the byte order is cut off: " + JSON.stringify(bb));
  await p2.screenshot({ path: `${shots}/phone-device-form.png` });
  await phone.close();

  step("the gateway stops under the open page: the page says so and greys out");
  await page.click("nav a[href='#southbound']");
  await card.locator("tr[data-point=temp] .value", { hasText: "21.5" }).waitFor();
  assert.equal(await ask("@@STOP"), "stopped");
  await page.locator("#offline", { hasText: "Gateway unreachable" }).waitFor(T);
  assert.ok(await page.evaluate(() => document.body.classList.contains("stale")), "stale values are not greyed out");
  await page.screenshot({ path: `${shots}/unreachable.png` });

  step("it starts again: the page reconnects, asks for the password and returns to the same tab");
  assert.equal(await ask("@@START"), "started");
  await page.locator("#offline").waitFor({ state: "hidden", timeout: 30000 });
  await page.locator("#p-login").waitFor(T);
  await page.fill("#login-form [name=password]", PASSWORD);
  await page.click("#login-form button");
  await page.locator("#p-southbound").waitFor(AFTER_PASSWORD);
  assert.equal(await page.evaluate(() => location.hash), "#southbound");
  await card.locator(".state.on", { hasText: "online" }).waitFor(T);
  const t1 = await row("temp").locator(".time").textContent();
  await page.waitForFunction(t => document.querySelector("#sb-devices [data-device=meter1] tr[data-point=temp] .time").textContent !== t, t1, T);
  await page.click("nav a[href='#live']");
  await page.fill("#live-form [name=filter]", "southbound/meter1/#");
  await page.click("#live-form button[type=submit]");
  await page.locator("#live-list li", { hasText: "southbound/meter1/" }).first().waitFor();

  step("logout, then wrong passwords lock out");
  await page.click("#logout");
  await page.locator("#p-login").waitFor();
  let text = "";
  for (let i = 0; i < 6 && !text.includes("too many"); i++) {
    await page.fill("#login-form [name=password]", "wrong-" + i);
    await page.evaluate(() => { document.querySelector("#login-form .err").textContent = ""; });
    await page.click("#login-form button");
    await page.waitForFunction(() => document.querySelector("#login-form .err").textContent !== "", null, AFTER_PASSWORD);
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
    const shown = await page.evaluate(() => [...document.querySelectorAll(".errs li, .err, .ferr, #banner, #import-result")].map(e => e.textContent).filter(t => t.trim()).join("\n")).catch(() => "");
    console.error("page shows:\n" + shown);
    await page.screenshot({ path: `${shots}/failed.png`, fullPage: true }).catch(() => { });
  }
  throw e;
} finally {
  await browser.close();
  process.stdin.destroy();
}
