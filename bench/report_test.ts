import assert from "node:assert/strict";
import { type BenchResults, mergeResults, toMarkdown } from "./report.ts";

const metrics = [
  { id: "rps", label: "requests", unit: "req/s", better: "higher" as const },
  { id: "bidir", label: "both ways", unit: "Mbit/s", better: "higher" as const },
];

function report(date: string, results: BenchResults["results"], notes: string[] = []): BenchResults {
  return {
    date,
    machine: { cpu: "test", cores: 2, kernel: "6", memory: "1 GiB" },
    versions: { wirescope: "0.1.0", mitmproxy: "11.0.2 (mitmproxy_rs 0.10.7)" },
    config: {},
    servers: Object.keys(results) as BenchResults["servers"],
    metrics,
    results,
    notes,
    durationSeconds: 60,
  };
}

Deno.test("mergeResults: a partial run replaces only the rows and servers it ran", () => {
  const previous = report("d1", {
    wirescope: { rps: [100] },
    mitmproxy: { rps: [10] },
    "wireguard-go": { rps: [200] },
  }, ["Partial run (d0): older rows", "a note of the old run"]);
  const current = {
    ...report("d2", { wirescope: { bidir: [50] }, "wireguard-go": { bidir: [60] } }),
    versions: { wirescope: "0.1.1" },
  };
  const merged = mergeResults(previous, current, new Set(["bidir"]));
  assert.deepEqual(merged.results.wirescope, { rps: [100], bidir: [50] });
  // mitmproxy did not run: its rows are the previous report's.
  assert.deepEqual(merged.results.mitmproxy, { rps: [10] });
  assert.equal(merged.versions.mitmproxy, "11.0.2 (mitmproxy_rs 0.10.7)");
  assert.equal(merged.versions.wirescope, "0.1.1");
  // The earlier partial run's note stays, the new one is added, other old notes go.
  assert.equal(merged.notes.filter((n) => n.startsWith("Partial run")).length, 2);
  assert.ok(!merged.notes.includes("a note of the old run"));
});

Deno.test("mergeResults: a server new to the report brings all its rows", () => {
  const previous = report("d1", { wirescope: { rps: [100] } });
  const current = {
    ...report("d2", { mitmproxy12: { rps: [20], bidir: [5], rssPeak: [900] } }),
    versions: { mitmproxy12: "12.3.1 (mitmproxy_rs 0.12.15)" },
  };
  const merged = mergeResults(previous, current, new Set(["rps", "bidir"]));
  assert.deepEqual(merged.results.mitmproxy12, { rps: [20], bidir: [5], rssPeak: [900] });
  assert.deepEqual(merged.results.wirescope, { rps: [100] });
});

Deno.test("toMarkdown: a column per server with its version, wirescope and each proxy against the ceiling", () => {
  const r = {
    ...report("d1", {
      "wireguard-go": { rps: [200] },
      mitmproxy: { rps: [10] },
      wirescope: { rps: [100] },
      mitmproxy12: { rps: [20] },
    }),
    versions: { mitmproxy: "11.0.2 (x)", mitmproxy12: "12.3.1 (y)" },
  };
  const md = toMarkdown(r);
  const header = md.split("\n").find((l) => l.startsWith("| workload"))!;
  assert.equal(
    header,
    "| workload | better | wirescope | mitmproxy 12.3.1 | mitmproxy 11.0.2 | wireguard-go + kernel (ceiling) | " +
      "wirescope ÷ mitmproxy 12.3.1 | wirescope ÷ mitmproxy 11.0.2 | wirescope ÷ ceiling | " +
      "mitmproxy 12.3.1 ÷ ceiling | mitmproxy 11.0.2 ÷ ceiling |",
  );
  const row = md.split("\n").find((l) => l.startsWith("| requests"))!;
  assert.equal(
    row,
    "| requests (req/s) | higher | 100 | 20.0 | 10.0 | 200 | 5.00× | 10.00× | 0.50× | 0.10× | 0.05× |",
  );
});
