// End-to-end test of the page's Rules tab in headless Chromium, on a
// 390×844 phone. Usage: node rules.mjs BASE_URL PASSWORD SCREENSHOT_DIR
// (started by TestE2ERules in Go, against the fake backend, set up
// already, with no rules).
import { chromium } from "playwright-core";
import assert from "node:assert/strict";

const [base, password, shots] = process.argv.slice(2);
const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox"], headless: true });
const step = name => console.log("rules e2e: " + name);

// noSideways fails when the page is wider than the phone.
async function noSideways(page, where) {
  const w = await page.evaluate(() => ({ doc: document.documentElement.scrollWidth, body: document.body.scrollWidth, vw: window.innerWidth }));
  assert.ok(w.doc <= w.vw && w.body <= w.vw, `${where}: the page is ${Math.max(w.doc, w.body)} px wide on a ${w.vw} px phone`);
}

// smallTargets lists the visible buttons, inputs and selects of the Rules
// page lower than 40 px, and the inputs without a label.
async function smallTargets(page) {
  return page.evaluate(() => {
    const bad = [];
    for (const e of document.querySelectorAll("#p-rules button, #p-rules input, #p-rules select, #p-rules textarea")) {
      const r = e.getBoundingClientRect();
      if (r.width === 0 && r.height === 0) continue; // hidden
      const name = e.outerHTML.slice(0, 80);
      if (e.type === "checkbox") { if (!e.closest("label") || e.closest("label").getBoundingClientRect().height < 40) bad.push("check target < 40 px: " + name); continue; }
      if (r.height < 40) bad.push(`${Math.round(r.height)} px: ${name}`);
      if (e.tagName !== "BUTTON" && !e.labels?.length && !e.closest("label") && !e.getAttribute("aria-label")) bad.push("no label: " + name);
    }
    return bad;
  });
}

try {
  const page = await (await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true })).newPage();
  page.on("pageerror", e => { console.error("page error: " + e.message); process.exitCode = 1; });

  step("log in on a phone, straight to the Rules tab");
  await page.goto(base + "/#rules");
  await page.fill("#login-form [name=password]", password);
  await page.click("#login-form button");
  await page.locator("#p-rules").waitFor();
  await page.locator("#rule-list", { hasText: "No rules yet" }).waitFor();
  await noSideways(page, "empty list");

  step("add a rule through the form: SQL and a republish action");
  await page.click("#rule-add");
  await page.fill("#rule-form [name=id]", "hot-boiler");
  await page.fill("#rule-form [name=description]", "alarm when the boiler is too hot");
  await page.fill("#rule-sql", 'SELECT payload.v AS t, topic\nFROM "southbound/boiler/temp"\nWHERE payload.v > 80');
  assert.equal(await page.textContent("#rule-form .rl-lines"), "1\n2\n3", "line numbers");
  await page.click("#rule-actions .rl-action button"); // remove the default log action
  await page.selectOption("#rule-action-kind", "republish");
  await page.click("#rule-action-add");
  await page.fill("#rule-actions .rl-action [data-key=topic]", "alarms/${topic}");
  assert.deepEqual(await smallTargets(page), [], "touch targets and labels of the form");
  await noSideways(page, "rule form");
  await page.screenshot({ path: `${shots}/rule-form.png`, fullPage: true });

  step("the test panel runs the rule on a sample and shows its output");
  await page.fill("#rule-test [name=topic]", "southbound/boiler/temp");
  await page.fill("#rule-test [name=payload]", '{"v": 90.5}');
  await page.click("#rule-test button[type=submit]");
  const out = page.locator("#rule-test-out li[data-output='0'] pre");
  await out.waitFor();
  const got = JSON.parse(await out.textContent());
  assert.deepEqual(got, { t: 90.5, topic: "southbound/boiler/temp" });
  await page.fill("#rule-test [name=payload]", '{"v": 20}');
  await page.click("#rule-test button[type=submit]");
  await page.locator("#rule-test-out", { hasText: "No output" }).waitFor();
  await noSideways(page, "test output");

  step("an SQL error is shown at the editor with its line:col, the caret there");
  await page.fill("#rule-sql", 'SELECT payload.v AS t,\n  avgg(payload.v) AS a\nFROM "southbound/boiler/temp"');
  await page.click("#rule-test button[type=submit]");
  const ferr = page.locator(".rl-editor .ferr");
  await ferr.waitFor();
  assert.match(await ferr.textContent(), /line 2, col 3: .*avgg/);
  assert.equal(await page.getAttribute("#rule-sql", "aria-invalid"), "true");
  const caret = await page.evaluate(() => document.getElementById("rule-sql").selectionStart);
  assert.equal(caret, "SELECT payload.v AS t,\n  ".length, "the caret is at the error");
  await noSideways(page, "SQL error");
  await page.screenshot({ path: `${shots}/rule-sql-error.png`, fullPage: true });

  step("saving the bad SQL is refused with the error at the editor too");
  await page.click("#rule-form button[type=submit]");
  await page.locator(".rl-editor .ferr", { hasText: /line 2, col 3/ }).waitFor();
  await page.locator("#rule-form .errs li", { hasText: "SQL" }).waitFor();

  step("fixed, the rule saves and shows in the list with its counters");
  await page.fill("#rule-sql", 'SELECT payload.v AS t, topic\nFROM "southbound/boiler/temp"\nWHERE payload.v > 80');
  await page.click("#rule-form button[type=submit]");
  const item = page.locator(".rl-item[data-rule=hot-boiler]");
  await item.waitFor();
  assert.ok(await page.locator("#rule-form").isHidden(), "the form closed");
  await item.locator(".rl-stats", { hasText: "matched" }).waitFor();
  assert.match(await item.textContent(), /republish: 5 ok, 0 failed, 0 dropped/);
  assert.match(await item.textContent(), /Actions: republish → alarms\/\$\{topic\}/);

  step("disable the rule from the list");
  await item.locator("button.toggle").click();
  await page.locator(".rl-item[data-rule=hot-boiler] button.toggle[aria-pressed=false]").waitFor();
  assert.deepEqual(await smallTargets(page), [], "touch targets and labels of the list");
  await noSideways(page, "rule list");
  await page.screenshot({ path: `${shots}/rule-list.png`, fullPage: true });

  step("edit keeps the action; a second rule is added and then deleted");
  await page.locator(".rl-item[data-rule=hot-boiler] button", { hasText: "Edit" }).click();
  assert.equal(await page.inputValue("#rule-actions .rl-action [data-key=topic]"), "alarms/${topic}");
  assert.equal(await page.isChecked("#rule-form [name=enabled]"), false);
  await page.click("#rule-cancel");
  await page.click("#rule-add");
  await page.fill("#rule-form [name=id]", "spare");
  await page.fill("#rule-sql", 'SELECT * FROM "t/#"');
  await page.click("#rule-form button[type=submit]");
  await page.locator(".rl-item[data-rule=spare]").waitFor();
  page.once("dialog", d => d.accept());
  await page.locator(".rl-item[data-rule=spare] button", { hasText: "Delete" }).click();
  await page.locator(".rl-item[data-rule=spare]").waitFor({ state: "detached" });
  step("done");
} finally {
  await browser.close();
}
