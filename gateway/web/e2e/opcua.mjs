// End-to-end test of the page's OPC UA section against the real fieldgate
// binary, in headless Chromium on a phone (390×844). Started by
// TestE2EOPCUAPage (gateway/opcua_e2e_test.go):
//
//   node opcua.mjs BASE_URL SCREENSHOT_DIR ENDPOINT
//
// ENDPOINT is where the Go test starts a node-opcua server (Basic256Sha256
// SignAndEncrypt) once the script prints "@@START_SERVER" (after the page
// added the server, so that the gateway has made the certificate the
// server is told to trust). The script first-boots the gateway, adds the
// server on the Southbound tab, sees it refused for its untrusted
// certificate with the thumbprint shown, trusts it, browses from Objects
// to Test/Tree/Plant/Line1/Press4, adds Temp as a point with one click and
// sees its live value 81.25 in the server's tag table, then imports a point
// CSV (a dry run naming the bad row, then applied, its value read live).
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import readline from "node:readline";

const [base, shots, endpoint] = process.argv.slice(2);
const PASSWORD = "field-tech-2026";
const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox"], headless: true });
const step = name => console.log("opcua e2e: " + name);
const SLOW = { timeout: 90000 }; // node-opcua starting, a session set up on 2 busy cores

const rl = readline.createInterface({ input: process.stdin });
const answers = rl[Symbol.asyncIterator]();
async function ask(what) {
  console.log(what);
  return (await answers.next()).value;
}

// noOverflow fails when the page scrolls sideways, naming what sticks out.
async function noOverflow(p, where) {
  const o = await p.evaluate(() => {
    const w = document.documentElement.clientWidth;
    const wide = [...document.querySelectorAll("main *")].filter(e => e.getBoundingClientRect().right > w + 1 && e.offsetParent !== null && !e.closest(".scroll"))
      .slice(0, 5).map(e => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") + (typeof e.className === "string" && e.className ? "." + e.className.split(" ").join(".") : "") + " right=" + Math.round(e.getBoundingClientRect().right));
    return { by: document.documentElement.scrollWidth - w, wide };
  });
  assert.ok(o.by <= 0, `${where} scrolls sideways by ${o.by}px: ${o.wide.join(", ")}`);
}

// targets fails when a visible control of the OPC UA section is unlabelled
// or under 40 px high.
async function targets(p, where) {
  const bad = await p.evaluate(() => {
    const out = [];
    for (const e of document.querySelectorAll("#ua input, #ua select, #ua button, #ua a.button")) {
      if (e.offsetParent === null || e.type === "hidden" || e.type === "file") continue;
      const labelled = e.labels && e.labels.length || e.getAttribute("aria-label") || e.tagName === "BUTTON" || e.tagName === "A";
      if (!labelled) out.push("unlabelled " + e.tagName.toLowerCase() + "[name=" + e.name + "]");
      const h = e.getBoundingClientRect().height;
      if (h < 39.5) out.push("small " + e.tagName.toLowerCase() + "[" + (e.name || e.textContent.trim().slice(0, 24)) + "] " + Math.round(h) + "px");
    }
    return out.slice(0, 8);
  });
  assert.deepEqual(bad, [], where + ": " + bad.join("; "));
}

async function shot(p, name) {
  await p.evaluate(() => window.scrollTo(0, 0));
  await p.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
}

try {
  const ctx = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  const page = await ctx.newPage();
  page.setDefaultTimeout(15000);
  page.on("pageerror", e => { console.error("page error: " + e.message); process.exitCode = 1; });

  step("first boot");
  await page.goto(base + "/");
  await page.locator("#p-setup").waitFor();
  await page.fill("#setup-form [name=setup_code]", process.env.FIELDGATE_SETUP_CODE || "");
  await page.fill("#setup-form [name=gateway_id]", "plant-7");
  await page.fill("#setup-form [name=password]", PASSWORD);
  await page.fill("#setup-form [name=password2]", PASSWORD);
  await page.click("#setup-form button");
  await page.locator("#p-overview").waitFor();

  step("the Southbound tab has an OPC UA section; add the server with its security and login");
  await page.goto(base + "/#southbound");
  await page.locator("#ua-add").waitFor();
  await noOverflow(page, "southbound at 390");
  await page.click("#ua-add");
  const f = page.locator("#ua-form");
  await f.locator("[name=name]").fill("press");
  await f.locator("[name=endpoint]").fill("not a url");
  await f.locator("[name=policy]").selectOption("Basic256Sha256");
  await f.locator("[name=mode]").selectOption("SignAndEncrypt");
  await f.locator("button[type=submit]").click();
  await f.locator(".ferr", { hasText: "opc.tcp://" }).waitFor();
  await f.locator("[name=endpoint]").fill(endpoint);
  await f.locator("[name=auth]").selectOption("username");
  await targets(page, "the server form at 390");
  await f.locator("[name=username]").fill("gateway");
  await f.locator("[name=password]").fill("unused-by-this-server");
  // The test server takes anonymous users: back to anonymous.
  await f.locator("[name=auth]").selectOption("anonymous");
  await f.locator("button[type=submit]").click();
  const card = page.locator("#ua-servers [data-server=press]");
  await card.waitFor();

  step("the server is started, trusting the certificate the gateway made");
  assert.equal(await ask("@@START_SERVER"), "started");

  step("refused: its certificate is not trusted; the thumbprint is shown with the trust button");
  await card.locator(".ua-cert .ua-thumb").waitFor(SLOW);
  const thumb = (await card.locator(".ua-cert .ua-thumb").textContent()).trim();
  assert.match(thumb, /^[0-9A-Fa-f]{40}$/, "thumbprint " + thumb);
  await card.locator(".state", { hasText: "certificate not trusted" }).waitFor();
  await noOverflow(page, "the trust box at 390");
  await targets(page, "the trust box at 390");
  await shot(page, "opcua-untrusted");

  step("trust it: the server comes online");
  await card.locator("button.ua-trust").click();
  await card.locator(".state", { hasText: /^online$/ }).waitFor(SLOW);
  await card.locator(".ua-cert").waitFor({ state: "hidden" });

  step("browse from Objects to Press4 (lazy tree), each variable with its type, value and access");
  await card.locator("button", { hasText: "Browse" }).click();
  const tree = page.locator("#ua-tree");
  for (const name of ["Test", "Tree", "Plant", "Line1", "Press4"]) {
    const open = tree.locator("button.ua-open", { hasText: new RegExp(`^▸ ${name}$`) }).first();
    await open.waitFor(SLOW);
    await open.click();
  }
  const temp = tree.locator("li[data-node='ns=1;s=Test.Tree.Plant.Line1.Press4.Temp']");
  await temp.waitFor();
  const desc = await temp.textContent();
  assert.match(desc, /Double/);
  assert.match(desc, /81\.25/);
  assert.match(desc, /read only|read\/write/);
  await noOverflow(page, "the browse tree at 390");
  await targets(page, "the browse tree at 390");
  await shot(page, "opcua-browse");

  step("add Temp as a point with one click; its live value shows in the tag table");
  await temp.locator("button.ua-addpoint").click();
  await temp.locator(".wmsg", { hasText: "added as Temp" }).waitFor();
  const row = page.locator("#ua-servers [data-server=press] tr[data-point=Temp]");
  await row.waitFor();
  await row.locator(".value", { hasText: "81.25" }).waitFor(SLOW);
  await row.locator(".quality", { hasText: "good" }).waitFor();
  await noOverflow(page, "the tag table at 390");
  await shot(page, "opcua-points");

  step("import points from CSV (merge): a dry run names the bad row, then the good one is applied and read live");
  await card.locator("button", { hasText: "Import CSV" }).click();
  const csv = "name,address,data_type,unit,access\n" +
    "running,ns=1;s=Test.Tree.Plant.Line1.Press4.Running,,,RO\n" +
    "bad,ns=1;x=nope,,,RO\n";
  await page.setInputFiles("#ua-import-form [name=file]", { name: "points.csv", mimeType: "text/csv", buffer: Buffer.from(csv) });
  await page.selectOption("#ua-import-form [name=mode]", "merge");
  await page.click("#ua-import-form button[type=submit]");
  await page.locator("#ua-import-summary", { hasText: "2 rows: 1 good, 1 with errors" }).waitFor();
  await page.locator("#ua-import-errors tr[data-line='3']", { hasText: "address" }).waitFor();
  await noOverflow(page, "the import result at 390");
  await page.click("#ua-import-apply");
  await page.locator("#ua-import-summary", { hasText: "Applied: 1 points imported" }).waitFor();
  const running = page.locator("#ua-servers [data-server=press] tr[data-point=running]");
  await running.locator(".value", { hasText: "on" }).waitFor(SLOW);
  await page.locator("#ua-servers [data-server=press] tr[data-point=Temp]").waitFor();

  step("no sideways scroll at 360 px either");
  await page.setViewportSize({ width: 360, height: 740 });
  await page.waitForTimeout(300);
  await noOverflow(page, "southbound at 360");
  step("done");
  console.log(`opcua e2e: took ${Math.round(performance.now() / 1000)} s`);
} finally {
  rl.close(); // stdin open would keep node running
  await browser.close();
}
