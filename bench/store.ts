/**
 * `deno task bench:store`: the SQLite flow store (src/flows/store.ts) with 1,000,000 synthetic
 * flows (src/flows/testdata/flows.ts: 85% HTTP over a few hundred hosts, the rest TCP, UDP, DNS;
 * POST/PUT bodies of 64 bytes). Prints the time to write them (in transactions of 1,000, and one
 * transaction per flow as the proxy writes), to count and to page with an indexed filter and
 * with one the SQL cannot answer alone, the file size, and the process RSS during and after.
 *
 *   deno task bench:store [--flows N] [--single N] [--dir DIR] [--keep]
 * @module
 */
import process from "node:process";
import { compileFilter } from "../src/flows/filter.ts";
import type { Flow } from "../src/flows/flow.ts";
import { SqliteFlowStore } from "../src/flows/store.ts";
import { syntheticFlow } from "../src/flows/testdata/flows.ts";

function arg(name: string): string | undefined {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Deno.args[i + 1] : undefined;
}

const FLOWS = Number(arg("flows") ?? 1_000_000);
const SINGLE = Number(arg("single") ?? 20_000);
const dir = arg("dir") ?? await Deno.makeTempDir({ prefix: "wirescope-bench-store-" });
const keep = Deno.args.includes("--keep");
const path = `${dir}/bench.db`;

const mib = (n: number): string => `${(n / 1024 / 1024).toFixed(1)} MiB`;
const rss = (): number => Deno.memoryUsage().rss;
const fileSize = (p: string): number => {
  try {
    return Deno.statSync(p).size;
  } catch {
    return 0;
  }
};
/** Runs `fn`; returns its value, the wall time and the CPU time of this process (ms). */
function timed<T>(fn: () => T): [T, number, number] {
  const t = performance.now();
  const cpu = process.cpuUsage();
  const value = fn();
  const used = process.cpuUsage(cpu);
  return [value, performance.now() - t, (used.user + used.system) / 1000];
}
const secs = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;

const rows: [string, string][] = [];
const report = (what: string, value: string): void => {
  rows.push([what, value]);
  console.log(`${what.padEnd(58)} ${value}`);
};

report("flows", FLOWS.toLocaleString("en"));
report("load average at start (2 cores)", Deno.loadavg().map((n) => n.toFixed(1)).join(" "));
report("RSS at start", mib(rss()));
const store = SqliteFlowStore.open(path);
let peak = rss();
const BATCH = 1000;
// Flows are made outside the timed part: the synthetic generator is not the store's cost.
let writeMs = 0;
const samples: string[] = [];
let writeCpu = 0;
for (let start = 1; start <= FLOWS; start += BATCH) {
  const flows: Flow[] = [];
  for (let n = start; n < Math.min(start + BATCH, FLOWS + 1); n++) flows.push(syntheticFlow(n));
  const [, ms, cpu] = timed(() =>
    store.batch(() => {
      for (const flow of flows) store.end(flow);
    })
  );
  writeMs += ms;
  writeCpu += cpu;
  if (start % 100_000 === 1) {
    const now = rss();
    peak = Math.max(peak, now);
    samples.push(`${Math.round(now / 1048576)}`);
  }
}
peak = Math.max(peak, rss());
report(
  "write, transactions of 1,000",
  `${secs(writeMs)} (${Math.round(FLOWS / writeMs * 1000).toLocaleString("en")} flows/s); CPU ${
    secs(writeCpu)
  }`,
);
report("RSS peak while writing", mib(peak));
report("RSS every 100,000 flows (MiB)", samples.join(" "));
report("JS heap used after writing", mib(Deno.memoryUsage().heapUsed));

const singles: Flow[] = [];
for (let n = FLOWS + 1; n <= FLOWS + SINGLE; n++) singles.push(syntheticFlow(n));
const [, singleMs, singleCpu] = timed(() => {
  for (const flow of singles) store.end(flow);
});
singles.length = 0;
report(
  `write, one transaction per flow (${SINGLE.toLocaleString("en")})`,
  `${secs(singleMs)} (${Math.round(SINGLE / singleMs * 1000).toLocaleString("en")} flows/s); CPU ${
    secs(singleCpu)
  }`,
);
report("file size (db + wal)", mib(fileSize(path) + fileSize(`${path}-wal`)));
report("stored bytes (stats)", mib(store.stats().bytes));

for (
  const expression of [
    "~d example & ~m POST",
    "~c 404",
    "~d ^h17\\.news\\.test$",
    "~hq x-request:\\s*77777$",
    "~b xxxxxxxx & ~d shop",
  ]
) {
  const exact = compileFilter(expression).toSql().exact;
  const [count, countMs, countCpu] = timed(() => store.countSync(expression));
  const [page, pageMs] = timed(() => store.querySync({ filter: expression, limit: 100, newestFirst: true }));
  peak = Math.max(peak, rss());
  report(
    `${expression} (${exact ? "SQL" : "SQL + predicate"})`,
    `count ${count.toLocaleString("en")} in ${countMs.toFixed(0)} ms (CPU ${
      countCpu.toFixed(0)
    }); newest 100 in ${pageMs.toFixed(1)} ms (${page.flows.length})`,
  );
}
report("RSS peak while querying", mib(peak));
store.closeSync();
report("file size after close (checkpointed)", mib(fileSize(path)));
report("RSS after close", mib(rss()));

if (!keep) await Deno.remove(dir, { recursive: true });
else console.log(`kept ${path}`);
