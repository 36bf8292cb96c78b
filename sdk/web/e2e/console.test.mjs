// Browser tests of heraldd's operator console: the real binary (built
// here) on local fakes of every provider (`heraldd fakes`), in headless
// Chromium. The console's pages have no script; these click its forms.
import { strict as assert } from "node:assert";
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, test } from "node:test";
import { launch, sleep, until } from "./browser.mjs";

const root = resolve(import.meta.dirname, "../../..");
const work = mkdtempSync(join(tmpdir(), "herald-console-"));
const procs = [];
let base;
let key;
let browser;

const freePort = () =>
  new Promise((ok) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });

function run(args, ready) {
  const p = spawn(join(work, "heraldd"), args, { stdio: ["ignore", "pipe", "pipe"] });
  procs.push(p);
  let out = "";
  return new Promise((ok, fail) => {
    const on = (b) => {
      out += b;
      if (ready.test(out)) ok(p);
    };
    p.stdout.on("data", on);
    p.stderr.on("data", on);
    p.on("exit", (c) => fail(new Error(`heraldd ${args[0]} exited with ${c}:\n${out}`)));
  });
}

before(async () => {
  execFileSync("go", ["build", "-o", join(work, "heraldd"), "./cmd/heraldd"], { cwd: root, stdio: "inherit" });
  const addr = `127.0.0.1:${await freePort()}`;
  const dir = join(work, "fakes");
  await run(["fakes", "-dir", dir, "-listen", addr], /now run/);
  await run(["serve", "-config", join(dir, "herald.yaml")], /listening/);
  base = `http://${addr}`;
  key = readFileSync(join(dir, "admin-key"), "utf8").trim();
  browser = await launch();
});

after(async () => {
  await browser?.close();
  for (const p of procs.reverse()) p.kill("SIGTERM");
  await new Promise((r) => setTimeout(r, 300));
  rmSync(work, { recursive: true, force: true });
});

async function api(method, path, body, headers = {}) {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json", ...headers },
    body: body && JSON.stringify(body),
  });
  return { status: res.status, body: await res.json().catch(() => null) };
}


test("the console: log in, pause a lane and see it paused, requeue a dead letter and see it leave the list", async () => {
  // A push that goes out, and an email to an address the server refuses for good: a dead letter.
  const mail = (to, subject) => ({ User: "ada", Transactional: true,
    Email: { From: "shop@example.com", To: [to], Subject: subject, Text: "hello" } });
  assert.equal((await api("POST", "/v1/messages", mail("ada@example.com", "Receipt"), { "Idempotency-Key": "receipt-1" })).status, 202);
  assert.equal((await api("POST", "/v1/messages", mail("gone@example.com", "Shipped"), { "Idempotency-Key": "order-42" })).status, 202);
  await until("the dead letter", async () => (await api("GET", "/v1/admin/dead")).body.dead.length === 1);

  const ctx = await browser.newContext({ viewport: { width: 1200, height: 700 } });
  const page = await ctx.newPage();
  await page.goto(`${base}/console/`);
  assert.match(page.url(), /\/console\/login$/, "the console wants a login");
  await page.fill("input[name=key]", "hk_wrong");
  await page.click("button");
  assert.ok(await page.isVisible("text=unknown or has no admin scope"));
  await page.fill("input[name=key]", key);
  await page.click("button");
  await page.waitForSelector("#lanes");

  const row = page.locator('tr[data-lane="transactional.email"]');
  assert.equal((await row.locator(".state").innerText()).trim(), "running");
  await row.locator("button", { hasText: "Pause" }).click();
  await page.waitForSelector("#flash");
  assert.equal((await page.locator('tr[data-lane="transactional.email"] .state').innerText()).trim(), "paused");
  assert.equal((await api("GET", "/v1/admin/lanes")).body.lanes.find((l) => l.lane === "transactional.email").paused, true);
  // The embedded store's writer, the capacity a single heraldd has: its busy share since start.
  assert.match(await page.locator("#store").innerText(), /writer was busy \d+ % of the last [\d.]+ s/);
  await page.locator("#store").screenshot({ path: join(root, "docs/console-store.png") });
  await page.screenshot({ path: join(root, "docs/console-lanes.png") });

  await page.click("text=Dead letters");
  await page.waitForSelector("#dead");
  assert.equal(await page.locator("#dead tbody tr").count(), 1);
  assert.ok((await page.locator("#dead tbody tr").innerText()).includes("order-42"));
  await page.screenshot({ path: join(root, "docs/console-dead.png") });
  await page.locator("#dead tbody tr button", { hasText: "Requeue" }).click();
  await page.waitForSelector("#none");
  assert.match(await page.locator("#flash").innerText(), /requeued/);
  assert.equal((await api("GET", "/v1/admin/dead")).body.dead.length, 0, "it left the dead letters");
  const lane = (await api("GET", "/v1/admin/lanes")).body.lanes.find((l) => l.lane === "transactional.email");
  assert.equal(lane.ready, 1, "it waits in the paused lane");

  // A campaign paced at one message a second to a stored audience, paused from the console.
  const members = Array.from({ length: 30 }, (_, i) => ({ user: `fan${i}`, email: `fan${i}@example.com` }));
  assert.equal((await api("POST", "/v1/audiences/fans/members", { upload_id: "u1", members })).status, 200);
  assert.equal((await api("POST", "/v1/campaigns", { Key: "spring-sale", Name: "Spring sale", Audience: "fans", PerSecond: 1,
    Content: { Email: { From: "shop@example.com", Subject: "Spring sale", Text: "20% off" } } })).status, 202);
  await page.goto(`${base}/console/campaigns?key=spring-sale`);
  await page.waitForSelector("#campaign");
  assert.equal((await page.locator("#campaign .state").innerText()).trim(), "running");
  await page.locator("button", { hasText: "Pause" }).click();
  await page.waitForSelector("#flash");
  assert.equal((await page.locator("#campaign .state").innerText()).trim(), "paused");
  await page.screenshot({ path: join(root, "docs/console-campaign.png") });
  // The campaigns list shows it, paused, and leads back to it.
  await page.goto(`${base}/console/campaigns`);
  const listed = page.locator("#campaigns tr", { hasText: "spring-sale" });
  assert.equal((await listed.locator(".state").innerText()).trim(), "paused");
  await page.screenshot({ path: join(root, "docs/console-campaigns.png") });
  await listed.locator("a").click();
  await page.waitForSelector("#campaign");

  // A form from another origin, or without the session's token, is refused.
  const cookies = await ctx.cookies();
  const res = await fetch(`${base}/console/lanes/transactional.email/resume`, {
    method: "POST", redirect: "manual",
    headers: { Cookie: cookies.map((c) => `${c.name}=${c.value}`).join("; "), "Content-Type": "application/x-www-form-urlencoded" },
    body: "csrf=forged",
  });
  assert.equal(res.status, 403);
  const html = await page.content();
  assert.ok(!html.includes(key), "the key never appears in a page");
  await ctx.close();
});
