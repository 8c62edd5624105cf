/**
 * A short store soak (bench/store_soak.ts; `deno task soak:store` is the 30-minute one): 100 s of
 * small HTTPS requests (200 a second) through the `wirescope` command with its default flow
 * store. No request may fail, every answered request must be a flow in the store and a printed
 * line, and memory may not rise with the flows recorded.
 *
 * The command's old space is capped at 64 MiB here (DENO_V8_FLAGS): left to itself V8 lets
 * garbage pile up for minutes between full collections (the JS heap swung between 20 and 70 MiB,
 * RSS by ~35 MiB, in the long run), which over 100 s looks like a leak as large as keeping every
 * flow (~2 KiB of heap each). Capped, the heap settles at ~16 MiB and RSS at ~135 MiB after
 * ~7,000 flows; a flow kept per request would add ~1,400 MiB an hour to both.
 */
import assert from "node:assert/strict";
import { formatStoreSoak, runStoreSoak, slope } from "../bench/store_soak.ts";

Deno.test({
  name: "store soak (100 s): small HTTPS requests through the CLI with its store; all stored, memory flat",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const rate = 200, seconds = 100;
    const r = await runStoreSoak({
      seconds,
      sampleSeconds: 2,
      rate,
      loops: 8,
      v8Flags: "--max-old-space-size=64",
    });
    const report = formatStoreSoak(r, "tests/store_soak_e2e_test.ts");
    assert.equal(r.failed, 0, report);
    // (A busy machine may fall behind the pace; the flows still have to be many.)
    assert.ok(r.ok > rate * seconds * 0.5, report);
    assert.equal(r.stored, r.ok, report);
    assert.equal(r.printed, r.ok, report);
    assert.equal(r.cliExitCode, 0, report);
    const late = r.samples.filter((s) => s.t >= r.elapsed / 2);
    assert.ok(late.length >= 10, `too few samples\n${report}`);
    const hours = late.map((s) => s.t / 3600);
    const rss = slope(hours, late.map((s) => s.rssMiB));
    const heap = slope(hours, late.map((s) => s.heapMiB));
    assert.ok(rss < 400, `RSS rose ${rss.toFixed(0)} MiB/hour over the second half\n${report}`);
    assert.ok(heap < 150, `the JS heap rose ${heap.toFixed(0)} MiB/hour over the second half\n${report}`);
  },
});
