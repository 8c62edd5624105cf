/**
 * `deno task bench:web`: the web UI with a large store, in headless Chromium. A flow store gets
 * 100,000 synthetic flows (src/flows/testdata/flows.ts, as bench/store.ts), the UI serves it
 * (`startWebUi({ store })`), and the page reports when its list first showed flows and how long
 * each filter took from Enter to its first rows on screen (the server's check, the first page
 * and its count included); then the time to reach the end of the list by scrolling (pages load
 * in order), and the page's JS heap.
 *
 * Usage: deno run -A bench/web_ui.ts [--flows N]
 * @module
 */
import { SqliteFlowStore } from "../src/flows/store.ts";
import { syntheticFlow } from "../src/flows/testdata/flows.ts";
import type { Flow } from "../src/flows/flow.ts";
import { startWebUi } from "../src/web/server.ts";
import { Chromium } from "../tests/chromium.ts";

const flowsArg = Deno.args.indexOf("--flows");
const FLOWS = flowsArg >= 0 ? Number(Deno.args[flowsArg + 1]) : 100_000;
const FILTERS = [
  "~m POST",
  "~c 404",
  "~d ^h17\\.",
  "~u /item/99999\\?",
  "!(~m GET)",
  "~bs nothing-like-this",
];

async function until<T>(what: string, probe: () => Promise<T | undefined>, ms = 60_000): Promise<T> {
  const end = Date.now() + ms;
  for (let i = 0; i < 100_000 && Date.now() < end; i++) {
    const v = await probe();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`timed out waiting for ${what}`);
}

const dir = await Deno.makeTempDir({ prefix: "wirescope-bench-web-" });
const home = await Deno.makeTempDir({ prefix: "wirescope-bench-web-chromium-" });
const store = SqliteFlowStore.open(`${dir}/flows.db`);
const t0 = performance.now();
for (let start = 1; start <= FLOWS; start += 1000) {
  const flows: Flow[] = [];
  for (let n = start; n < Math.min(start + 1000, FLOWS + 1); n++) flows.push(syntheticFlow(n));
  store.batch(() => flows.forEach((f) => store.end(f)));
}
console.log(`store: ${FLOWS.toLocaleString("en")} flows written in ${Math.round(performance.now() - t0)} ms`);
const web = await startWebUi({ store, port: 0 });
const browser = await Chromium.launch({ home });
try {
  const s = await browser.newPage();
  await browser.send("Emulation.setDeviceMetricsOverride", {
    width: 1400,
    height: 820,
    deviceScaleFactor: 1,
    mobile: false,
  }, s);
  await browser.send("Performance.enable", {}, s);
  const evaluate = <T>(e: string) => browser.evaluate<T>(s, e);
  const key = async (k: string) => {
    const code = k === "Enter" ? { windowsVirtualKeyCode: 13 } : {};
    await browser.send("Input.dispatchKeyEvent", { type: "keyDown", key: k, ...code }, s);
    await browser.send("Input.dispatchKeyEvent", { type: "keyUp", key: k, ...code }, s);
  };
  await browser.load(s, web.url);
  const firstRows = await until("the first rows", async () => {
    const v = await evaluate<string | null>("document.body.dataset.firstRows ?? null");
    return v === null ? undefined : Number(v);
  });
  const nav = await evaluate<number>("performance.getEntriesByType('navigation')[0]?.startTime ?? 0");
  console.log(`first paint of the list: ${Math.round(firstRows - nav)} ms after navigation start`);

  for (const filter of FILTERS) {
    await evaluate(
      `(() => { delete document.body.dataset.filterMs; const f = document.getElementById('filter'); f.focus(); f.value = ${
        JSON.stringify(filter)
      }; })()`,
    );
    await key("Enter");
    const ms = await until(`filter ${filter}`, async () => {
      const v = await evaluate<string | null>("document.body.dataset.filterMs ?? null");
      return v === null ? undefined : Number(v);
    });
    const count = await evaluate<string>("document.getElementById('count').textContent");
    console.log(`filter ${JSON.stringify(filter)}: ${Math.round(ms)} ms to first rows (${count})`);
  }

  // Back to all flows, then to the end of the list by scrolling.
  await evaluate(
    `(() => { delete document.body.dataset.filterMs; const f = document.getElementById('filter'); f.focus(); f.value = ''; })()`,
  );
  await key("Enter");
  await until(
    "all flows again",
    async () => (await evaluate<string | null>("document.body.dataset.filterMs ?? null")) ?? undefined,
  );
  // A jump to the end of the list (the scroll bar dragged down), then to the middle, then all of it.
  const rowShown = (index: number) => async () =>
    (await evaluate<boolean>(`!!document.querySelector('.row[data-index="${index}"][data-id]')`)) ||
    undefined;
  const scrollTo = (index: number) =>
    evaluate(`(() => { const l = document.getElementById('list'); l.scrollTop = ${index} * 24; })()`);
  let t = performance.now();
  await scrollTo(FLOWS);
  await until("the last row on screen", rowShown(FLOWS - 1));
  console.log(
    `jump to the end of ${FLOWS.toLocaleString("en")}: last row on screen in ${
      Math.round(performance.now() - t)
    } ms`,
  );
  t = performance.now();
  const middle = Math.floor(FLOWS / 2);
  await scrollTo(middle);
  await until("the middle row on screen", rowShown(middle), 300_000);
  console.log(`then to the middle: ${Math.round(performance.now() - t)} ms`);
  // Then through the whole list, a few thousand rows at a time, until every row is loaded.
  t = performance.now();
  for (let i = 0; i < FLOWS; i += 4000) {
    await scrollTo(i);
    await until(`row ${i} on screen`, rowShown(i), 300_000);
  }
  await scrollTo(FLOWS);
  await until("every row loaded", async () => {
    const n = await evaluate<number>("Number(document.body.dataset.loaded)");
    return n >= FLOWS ? n : undefined;
  }, 300_000);
  console.log(`then the whole list scrolled through: ${Math.round(performance.now() - t)} ms`);
  const { metrics } = await browser.send("Performance.getMetrics", {}, s) as {
    metrics: { name: string; value: number }[];
  };
  const heap = metrics.find((m) => m.name === "JSHeapUsedSize")?.value ?? 0;
  const nodes = metrics.find((m) => m.name === "Nodes")?.value ?? 0;
  console.log(
    `page with all ${FLOWS.toLocaleString("en")} summaries: JS heap ${
      (heap / 1048576).toFixed(1)
    } MiB, ${nodes} DOM nodes`,
  );
} finally {
  await browser.close();
  await web.close();
  await store.close();
  await Deno.remove(dir, { recursive: true });
  await Deno.remove(home, { recursive: true });
}
