/**
 * The recorder: ended flows reach the store in batches and listeners hear of them after the
 * commit, live flows are written a few times a second at most, the save filter keeps only
 * matching ended flows, a failing store stops recording with one log line and never throws;
 * the same through the worker-backed store.
 */
import assert from "node:assert/strict";
import type { Flow, HttpFlow } from "./flow.ts";
import { FlowRecorder } from "./recorder.ts";
import { type FlowStore, type FlowStoreStats, SqliteFlowStore } from "./store.ts";
import { WorkerFlowStore } from "./worker_store.ts";
import { sampleFlows, syntheticFlow } from "./testdata/flows.ts";

async function withDir<T>(fn: (dir: string) => Promise<T> | T): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "wirescope-recorder-" });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test("recorder: ended flows are committed in one batch, then listeners hear of them", async () => {
  await withDir(async (dir) => {
    const store = SqliteFlowStore.open(`${dir}/a.db`);
    const recorder = new FlowRecorder(store, { flushDelay: 10 });
    const heard: Flow[][] = [];
    recorder.onCommit((flows) => {
      // Every flow a listener hears of is already in the file.
      for (const f of flows) assert.ok(store.getSync(f.id), `${f.id} is stored before it is told`);
      heard.push(flows);
    });
    const flows = Array.from({ length: 20 }, (_, i) => syntheticFlow(i));
    for (const f of flows) {
      recorder.handle({ type: "start", flow: f });
      recorder.handle({ type: "end", flow: f });
    }
    assert.equal(store.stats().flows, 0, "nothing is written on the event itself");
    await tick(40);
    await recorder.settled();
    assert.equal(heard.length, 1);
    assert.deepEqual(heard[0]!.map((f) => f.id), flows.map((f) => f.id));
    assert.equal(store.countSync(), 20);
    const stats = recorder.stats();
    assert.equal(stats.stored, 20);
    assert.equal(stats.batches, 1);
    assert.equal(stats.liveWrites, 0, "a flow that ends within the window is written once");
    recorder.close();
    await store.close();
  });
});

Deno.test("recorder: a live flow is written at most once per update interval", async () => {
  await withDir(async (dir) => {
    const store = SqliteFlowStore.open(`${dir}/a.db`);
    const recorder = new FlowRecorder(store, { flushDelay: 5, updateInterval: 200 });
    const flow = structuredClone(sampleFlows().get) as HttpFlow;
    recorder.handle({ type: "start", flow });
    const end = Date.now() + 500;
    while (Date.now() < end) {
      recorder.handle({ type: "update", flow });
      await tick(2);
    }
    const live = await store.get(flow.id);
    assert.ok(live?.live, "the live flow is in the store");
    // 500 ms of updates every ~2 ms: the first write and at most one per 200 ms after it.
    const writes = recorder.stats().liveWrites;
    assert.ok(writes >= 2 && writes <= 4, `${writes} live writes`);
    recorder.handle({ type: "end", flow });
    recorder.close();
    await recorder.settled();
    assert.equal((await store.get(flow.id))?.live, false);
    await store.close();
  });
});

Deno.test("recorder: with a save filter only matching ended flows are stored; all are told", async () => {
  await withDir(async (dir) => {
    const store = SqliteFlowStore.open(`${dir}/a.db`);
    const recorder = new FlowRecorder(store, { filter: "~m POST", flushDelay: 5 });
    let told = 0;
    recorder.onCommit((flows) => (told += flows.length));
    const flows = Object.values(sampleFlows());
    for (const f of flows) {
      recorder.handle({ type: "start", flow: f });
      recorder.handle({ type: "end", flow: f });
    }
    recorder.close();
    await recorder.settled();
    const posts = flows.filter((f) => f.type === "http" && f.request.method === "POST");
    assert.ok(posts.length > 0 && posts.length < flows.length);
    assert.equal(store.countSync(), posts.length);
    assert.equal(told, flows.length, "the command still prints the others");
    assert.equal(recorder.stats().filteredOut, flows.length - posts.length);
    await store.close();
  });
});

/** A store whose writes fail, as on a full disk. */
class FailingStore implements FlowStore {
  errors = 0;
  put(): void {
    this.errors++;
  }
  end(): void {
    this.errors++;
  }
  get() {
    return Promise.resolve(undefined);
  }
  query() {
    return Promise.resolve({ flows: [] });
  }
  count() {
    return Promise.resolve(0);
  }
  delete() {
    return Promise.resolve(0);
  }
  clear() {
    return Promise.resolve();
  }
  setMark() {
    return Promise.resolve(false);
  }
  setComment() {
    return Promise.resolve(false);
  }
  stats(): FlowStoreStats {
    return { flows: 0, bytes: 0, dropped: 0, droppedBytes: 0, writeErrors: this.errors, bodiesCut: 0 };
  }
  close() {
    return Promise.resolve();
  }
}

Deno.test("recorder: a failing store stops recording with one log line; events never throw", async () => {
  const store = new FailingStore();
  const lines: string[] = [];
  const recorder = new FlowRecorder(store, {
    flushDelay: 1,
    onLog: (_level, message) => lines.push(message),
  });
  let told = 0;
  recorder.onCommit((flows) => (told += flows.length));
  for (let round = 0; round < 3; round++) {
    for (let i = 0; i < 10; i++) {
      const f = syntheticFlow(round * 10 + i);
      recorder.handle({ type: "start", flow: f });
      recorder.handle({ type: "end", flow: f });
    }
    await tick(10);
  }
  recorder.close();
  await recorder.settled();
  assert.equal(lines.length, 1, lines.join("\n"));
  assert.match(lines[0]!, /recording stopped \(the proxy keeps running\)/);
  assert.equal(store.errors, 10, "no writes after the first failed batch");
  const stats = recorder.stats();
  assert.equal(stats.stopped, true);
  assert.equal(stats.notStored, 30);
  assert.equal(told, 30, "every flow is still told (printed)");
});

Deno.test("recorder: through the worker store, flows are readable once listeners hear of them", async () => {
  await withDir(async (dir) => {
    const store = await WorkerFlowStore.open(`${dir}/w.db`);
    const recorder = new FlowRecorder(store, { flushDelay: 5 });
    let checked = 0;
    const checks: Promise<void>[] = [];
    recorder.onCommit((flows) => {
      checks.push((async () => {
        for (const f of flows) {
          assert.ok(await store.get(f.id), `${f.id} readable when told`);
          checked++;
        }
      })());
    });
    const flows = Object.values(sampleFlows());
    for (const f of flows) {
      recorder.handle({ type: "start", flow: f });
      recorder.handle({ type: "end", flow: f });
    }
    await tick(30);
    await recorder.settled();
    await Promise.all(checks);
    assert.equal(checked, flows.length);
    for (const f of flows) assert.deepStrictEqual((await store.get(f.id))?.flow, f);
    assert.equal(store.stats().flows, flows.length);
    recorder.close();
    await store.close();
    // Closed cleanly: a reader sees every flow.
    const reader = SqliteFlowStore.open(`${dir}/w.db`, { readOnly: true });
    assert.equal(reader.countSync(), flows.length);
    reader.closeSync();
  });
});
