/** The worker store: what a flow carries besides its columns (marks, comments, bodies) arrives whole. */
import assert from "node:assert/strict";
import type { HttpFlow } from "./flow.ts";
import { SqliteFlowStore } from "./store.ts";
import { WorkerFlowStore } from "./worker_store.ts";
import { sampleFlows } from "./testdata/flows.ts";

Deno.test("worker store: a flow's mark, comment, error and bodies are written as the flow has them", async () => {
  const dir = await Deno.makeTempDir({ prefix: "wirescope-worker-store-" });
  try {
    const store = await WorkerFlowStore.open(`${dir}/w.db`);
    const flow = structuredClone(sampleFlows().get) as HttpFlow;
    flow.marked = "important";
    flow.comment = "seen twice ✓";
    flow.error = { message: "", timestamp: flow.timestampStart };
    const plain = structuredClone(sampleFlows().binary) as HttpFlow;
    store.batch(() => {
      store.end(flow);
      store.end(plain);
    });
    await store.committed();
    const back = await store.get(flow.id);
    assert.equal(back?.mark, "important");
    assert.equal(back?.comment, "seen twice ✓");
    assert.deepStrictEqual(back?.flow, flow);
    assert.equal(await store.count("~marker important"), 1);
    assert.deepStrictEqual((await store.get(plain.id))?.flow, plain);
    await store.close();
    const reader = SqliteFlowStore.open(`${dir}/w.db`, { readOnly: true });
    assert.equal(reader.countSync(), 2);
    reader.closeSync();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
