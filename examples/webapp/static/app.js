// The example page: herald's web SDK (herald.js, built from sdk/web).
import { Herald } from "/herald.js";

const user = new URLSearchParams(location.search).get("user") || "ada";
const token = async () => {
  const res = await fetch(`/token?user=${encodeURIComponent(user)}`);
  if (!res.ok) throw new Error(`token: ${res.status}`);
  return (await res.json()).token;
};
const herald = new Herald({ url: "/inbox", token, db: `herald-${user}` });
const $ = (id) => document.getElementById(id);
$("user").textContent = user;

async function refreshInbox() {
  const [{ items }, counts] = await Promise.all([herald.feed({ limit: 20 }), herald.counts()]);
  showCounts(counts);
  const ul = $("items");
  ul.replaceChildren(
    ...items.map((it) => {
      const li = document.createElement("li");
      li.className = it.read_at ? "" : "unread";
      li.dataset.id = it.id;
      const b = document.createElement("b");
      b.textContent = it.title ?? "";
      const small = document.createElement("small");
      small.textContent = it.body ?? "";
      li.append(b, small);
      li.onclick = async () => {
        await herald.mark([it.id], "read");
        await herald.track("opened", it.id);
        await refreshInbox();
      };
      return li;
    }),
  );
}

function showCounts(c) {
  const badge = $("badge");
  badge.textContent = String(c.unread);
  badge.hidden = c.unread === 0;
}

async function showInApp() {
  const [m] = await herald.inApp();
  if (!m) return;
  $("m-title").textContent = m.title ?? "";
  $("m-body").textContent = m.body ?? "";
  $("m-cta").textContent = m.data?.cta ?? "OK";
  $("modal").hidden = false;
  $("modal").dataset.id = m.id;
}

$("m-cta").onclick = async () => {
  $("modal").hidden = true;
  await herald.react($("modal").dataset.id, "clicked");
  await herald.setAttributes({ plan: "pro" });
};
$("m-close").onclick = async () => {
  $("modal").hidden = true;
  await herald.react($("modal").dataset.id, "dismissed");
};
for (const b of document.querySelectorAll("[data-sku]")) {
  b.onclick = () => herald.event("added_to_cart", { sku: b.dataset.sku });
}
$("notify").onclick = async () => {
  await fetch("/demo/notify", { method: "POST", headers: { Authorization: `Bearer ${await token()}` } });
};
$("pro").onclick = () => herald.setAttributes({ plan: "pro" });
$("readall").onclick = async () => {
  const { items } = await herald.feed({ limit: 200 });
  const unread = items.filter((i) => !i.read_at).map((i) => i.id);
  if (unread.length) await herald.mark(unread, "read");
  await refreshInbox();
};

setInterval(async () => ($("pending").textContent = String(await herald.pending())), 300);
herald.subscribe({ counts: () => void refreshInbox(), inApp: () => void showInApp() });
await refreshInbox();
await showInApp();

// For the browser tests: track events n = from … to-1, 25 at a time.
window.herald = herald;
window.trackRange = async (from, to) => {
  for (let n = from; n < to; n += 25) {
    const batch = [];
    for (let i = n; i < Math.min(to, n + 25); i++) batch.push(herald.event("tap", { n: i }));
    await Promise.all(batch);
  }
};
document.body.dataset.ready = "1";
