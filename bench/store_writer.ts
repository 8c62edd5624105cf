/**
 * The flow store's writer alone: CPU per flow of what the store's Worker does for each batch it is
 * sent (unpack the packed rows, one transaction of `writeRow`s), on this thread, without a proxy.
 *
 *   deno run -A bench/store_writer.ts [--flows 50000] [--batch 100] [--prefill 200000] [--rounds 3]
 *     [--ids random|ordered|synthetic]
 *
 * The store first gets `--prefill` flows (in batches of 1,000, not timed) so that its indexes are
 * as deep as a store in use; then `--flows` flows are packed in batches of `--batch` (as
 * src/flows/row_pack.ts packs them on the proxy's thread; not timed) and written one batch per
 * transaction. Flows are `syntheticFlow(n, 100)` (src/flows/testdata/flows.ts). Prints, per
 * round, µs of CPU per flow (user and kernel), wall µs per flow, and the WAL's size; then medians.
 * @module
 */
import process from "node:process";
import { flowRow, SqliteFlowStore } from "../src/flows/store.ts";
import { type PackedRows, RowPacker, unpackRows } from "../src/flows/row_pack.ts";
import { syntheticFlow } from "../src/flows/testdata/flows.ts";
import { newFlowId } from "../src/flows/flow_id.ts";

const option = (name: string, fallback: number): number => {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Number(Deno.args[i + 1]) : fallback;
};
const FLOWS = option("flows", 50_000);
const BATCH = option("batch", 100);
const PREFILL = option("prefill", 200_000);
const ROUNDS = option("rounds", 3);
/** `random`: version 4 UUIDs, as the proxy made them; `ordered`: {@link newFlowId}; `synthetic`: the generator's. */
const IDS = Deno.args.includes("--ids") ? Deno.args[Deno.args.indexOf("--ids") + 1]! : "random";
const flowNumber = (n: number) => {
  const flow = syntheticFlow(n, 100);
  if (IDS === "random") flow.id = crypto.randomUUID();
  else if (IDS === "ordered") flow.id = newFlowId();
  return flow;
};

const dir = await Deno.makeTempDir({ prefix: "wirescope-bench-writer-" });
const path = `${dir}/writer.db`;
const walSize = (): number => {
  try {
    return Deno.statSync(`${path}-wal`).size;
  } catch {
    return 0;
  }
};
try {
  const store = SqliteFlowStore.open(path);
  let n = 0;
  for (let start = 0; start < PREFILL; start += 1000) {
    store.batch(() => {
      for (let i = 0; i < Math.min(1000, PREFILL - start); i++) store.end(flowNumber(++n));
    });
  }
  const results: { user: number; system: number; wall: number }[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    const batches: PackedRows[] = [];
    const packer = new RowPacker();
    for (let i = 0; i < FLOWS; i++) {
      packer.add(flowRow(flowNumber(++n), true));
      if (packer.count === BATCH || i === FLOWS - 1) batches.push(packer.take());
    }
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    for (const packed of batches) {
      const rows = unpackRows(packed);
      store.batch(() => {
        for (const row of rows) store.writeRow(row);
      });
    }
    const cpu = process.cpuUsage(cpu0);
    const wall = performance.now() - t0;
    const r = { user: cpu.user / FLOWS, system: cpu.system / FLOWS, wall: (wall * 1000) / FLOWS };
    results.push(r);
    console.log(
      `round ${round + 1}: ${(r.user + r.system).toFixed(1)} µs CPU/flow (user ${r.user.toFixed(1)}, kernel ${
        r.system.toFixed(1)
      }), wall ${r.wall.toFixed(1)} µs/flow, WAL ${(walSize() / 1048576).toFixed(1)} MiB`,
    );
  }
  if (store.stats().writeErrors > 0) throw new Error(`${store.stats().writeErrors} writes failed`);
  store.closeSync();
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const cpu = median(results.map((r) => r.user + r.system));
  console.log(
    `writer, ${FLOWS.toLocaleString("en")} flows in batches of ${BATCH} after ${
      PREFILL.toLocaleString("en")
    }, ids ${IDS} (median of ${ROUNDS}): ${cpu.toFixed(1)} µs CPU/flow (kernel ${
      median(results.map((r) => r.system)).toFixed(1)
    }), wall ${median(results.map((r) => r.wall)).toFixed(1)} µs/flow; file ${
      (Deno.statSync(path).size / 1048576).toFixed(0)
    } MiB`,
  );
} finally {
  await Deno.remove(dir, { recursive: true });
}
