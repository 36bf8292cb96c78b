// Browser tests: the web SDK in headless Chromium (Debian's, driven by
// playwright-core) against the real Go server (examples/webapp on the
// embedded store). Run with `npm run e2e` after `npm run build`.
import { strict as assert } from "node:assert";
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, test } from "node:test";
import { launch, sleep, until } from "./browser.mjs";

const root = resolve(import.meta.dirname, "../../..");
const work = mkdtempSync(join(tmpdir(), "herald-e2e-"));
let server;
let base;
let browser;

before(async () => {
  execFileSync("go", ["build", "-o", join(work, "webapp"), "./examples/webapp"], { cwd: root, stdio: "inherit" });
  server = spawn(join(work, "webapp"), ["-addr", "127.0.0.1:0", "-db", join(work, "herald.db"), "-test-control"], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  base = await new Promise((ok, fail) => {
    let out = "";
    server.stdout.on("data", (b) => {
      out += b;
      const m = out.match(/listening on (http:\/\/[0-9.:]+)/);
      if (m) ok(m[1]);
    });
    server.on("exit", (c) => fail(new Error(`webapp exited with ${c}`)));
  });
  browser = await launch();
});

after(async () => {
  await browser?.close();
  server?.kill("SIGTERM");
  rmSync(work, { recursive: true, force: true });
});



const control = (path, method = "POST") => fetch(`${base}${path}`, { method }).then((r) => {
  assert.ok(r.ok, `${path}: ${r.status}`);
  return method === "GET" ? r.json() : null;
});

async function open(ctx, user) {
  const page = await ctx.newPage();
  await page.goto(`${base}/?user=${user}`);
  await page.waitForSelector('body[data-ready="1"]');
  return page;
}

test("1,000 events through a 503 stretch, an offline stretch and two reloads: every one in the journal once", async () => {
  const ctx = await browser.newContext();
  let page = await open(ctx, "e2e");
  await page.evaluate(() => window.trackRange(0, 200));
  await control("/test/ingest?status=503");
  await page.evaluate(() => window.trackRange(200, 400));
  await sleep(1500); // the sender meets the 503s and backs off
  await page.reload(); // reload 1, server still failing
  await page.waitForSelector('body[data-ready="1"]');
  await page.evaluate(() => window.trackRange(400, 600));
  await ctx.setOffline(true);
  await page.evaluate(() => window.trackRange(600, 800));
  await sleep(1000);
  await ctx.setOffline(false);
  await page.reload(); // reload 2, server still failing
  await page.waitForSelector('body[data-ready="1"]');
  await page.evaluate(() => window.trackRange(800, 1000));
  await sleep(500);
  await control("/test/ingest?status=0"); // recovery

  const j = await until("1,000 events in the journal", async () => {
    const j = await control("/test/journal?user=e2e", "GET");
    return j.events.length >= 1000 ? j : null;
  });
  await sleep(1500); // late resends, if any, would show now
  const final = await control("/test/journal?user=e2e", "GET");
  const ns = final.events.map((e) => e.props.n).sort((a, b) => a - b);
  assert.equal(final.events.length, 1000, "exactly 1,000 events in the journal");
  assert.deepEqual(ns, Array.from({ length: 1000 }, (_, i) => i), "each of 0…999 once: none lost, none doubled");
  assert.equal(new Set(final.events.map((e) => e.id)).size, 1000);
  assert.equal(final.distinct, 1000, "the server saw 1,000 distinct IDs");
  assert.ok(final.received >= 1000, "repeats are retries of the same IDs");
  assert.equal(await until("an empty browser journal", async () => (await page.evaluate(() => window.herald.pending())) === 0 || null, 10_000), true);
  assert.ok(final.refused > 0, "the 503 stretch refused some of them");
  console.log(`# 1,000 events: ${final.refused} refused by the 503 stretch and resent; ${final.received} reached the handler ` +
    `(${final.received - 1000} repeats with the same IDs, deduplicated); journal ${j.events.length} → ${final.events.length}`);
  await ctx.close();
});

test("the Inbox badge follows the stream; an in-app upsell is refused at display once the user's attributes say pro", async () => {
  const ctx = await browser.newContext({ viewport: { width: 1100, height: 640 } });
  const page = await open(ctx, "lin");
  await page.waitForFunction(() => document.getElementById("badge").textContent === "3");
  await page.waitForSelector("#modal:not([hidden])"); // the welcome upsell, decided eligible now
  assert.equal(await page.textContent("#m-title"), "Go Pro");
  // A new Inbox item (the button under the modal): the badge moves without a reload.
  await page.evaluate(() => document.getElementById("notify").click());
  await page.waitForFunction(() => document.getElementById("badge").textContent === "4", null, { timeout: 10_000 });
  await page.screenshot({ path: join(root, "docs/webapp.png") });

  await page.click("#m-cta"); // upgrade: a click reaction and an attribute update
  await until("the host to see plan=pro", async () => (await control("/test/journal?user=lin", "GET")).attributes.plan === "pro");
  await control("/test/inapp?user=lin&key=upsell-2");
  const j = await until("upsell-2 decided", async () => {
    const j = await control("/test/journal?user=lin", "GET");
    return j.outcomes.some((o) => o.message_id === "upsell-2" && o.type !== "accepted") ? j : null;
  }, 15_000);
  assert.deepEqual(j.outcomes.filter((o) => o.message_id === "upsell-2" && o.type !== "accepted"),
    [{ message_id: "upsell-2", type: "ineligible", reason: "already on the pro plan" }]);
  assert.ok(j.outcomes.some((o) => o.message_id === "upsell/lin" && o.type === "displayed"));
  await until("the click", async () => (await control("/test/journal?user=lin", "GET")).outcomes.some((o) => o.message_id === "upsell/lin" && o.type === "clicked"), 10_000);
  assert.equal(await page.isHidden("#modal"), true, "nothing shown");
  await ctx.close();
});
