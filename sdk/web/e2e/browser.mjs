// What the browser tests share: Debian's Chromium, started as this
// machine's closed network needs (no background networking, no QUIC), and
// a poll with a deadline.
import { chromium } from "playwright-core";

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls f until it returns something truthy, and returns it. */
export async function until(what, f, ms = 60_000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}
