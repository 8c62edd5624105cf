/**
 * The SQLite flow store: exact round trips of every flow type, the body limit, live and ended
 * flows, marks and comments, queries with filters and paging, retention, refusing foreign and
 * newer files, failed writes counted, SIGKILL of a writing process, and two readers while a
 * process writes.
 */
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { appendBody, emptyBody, type Flow, type HttpFlow } from "./flow.ts";
import { compileFilter } from "./filter.ts";
import {
  type FlowStore,
  FlowStoreError,
  type RetentionEvent,
  SCHEMA_VERSION,
  SqliteFlowStore,
} from "./store.ts";
import { bytes, sampleFlows, syntheticFlow } from "./testdata/flows.ts";

const WRITER = new URL("./testdata/store_writer.ts", import.meta.url).pathname;
const DENO = Deno.execPath();

async function withDir<T>(fn: (dir: string) => Promise<T> | T): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "wirescope-store-" });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("store: every flow type round-trips exactly, bytes intact", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/flows.db`;
    const flows = sampleFlows();
    // A body recorded piece by piece (its content is a getter over a growing buffer).
    const grown = structuredClone(flows.get) as HttpFlow;
    grown.id = "00000000-0000-4000-8000-0000000000ff";
    grown.response!.body = emptyBody();
    for (let i = 0; i < 50; i++) appendBody(grown.response!.body, bytes(`chunk ${i};`), 1 << 20);
    flows.grown = grown;
    let store: FlowStore = SqliteFlowStore.open(path);
    for (const flow of Object.values(flows)) store.end(flow);
    await store.close();
    store = SqliteFlowStore.open(path, { readOnly: true });
    for (const [name, flow] of Object.entries(flows)) {
      const stored = await store.get(flow.id);
      assert.ok(stored, name);
      assert.deepStrictEqual(stored.flow, flow, name);
      assert.equal(stored.live, false);
    }
    const binary = (await store.get(flows.binary!.id))!.flow as HttpFlow;
    assert.ok(binary.request.body.content instanceof Uint8Array);
    assert.deepEqual([...binary.request.body.content.subarray(0, 3)], [255, 254, 253]);
    assert.equal(binary.request.body.size, 10_000);
    const ws = (await store.get(flows.ws!.id))!.flow as HttpFlow;
    assert.equal(new TextDecoder().decode(ws.websocket!.messages[1]!.content), "welcome, stranger");
    assert.equal(await store.get("no-such-id"), undefined);
    await store.close();
  });
});

Deno.test("store: bodies above the store's limit keep a prefix and their true size", async () => {
  const problems: string[] = [];
  const store = SqliteFlowStore.open(":memory:", { bodyLimit: 10, onError: (e) => problems.push(e.message) });
  const { post, tcp } = sampleFlows();
  store.end(post!);
  store.end(tcp!);
  const got = (await store.get(post!.id))!.flow as HttpFlow;
  assert.equal(new TextDecoder().decode(got.request.body.content), '{"user":"b');
  assert.equal(got.request.body.size, 35);
  assert.equal(got.request.body.truncated, true);
  assert.equal(got.response!.body.truncated, true);
  const t = (await store.get(tcp!.id))!.flow as Extract<Flow, { type: "tcp" }>;
  assert.equal(t.messages[0]!.content.byteLength, 8);
  assert.equal(store.stats().bodiesCut, 2 /* post request and response */);
  assert.deepEqual(problems, []);
  await store.close();
});

Deno.test("store: live flows are updated in place, keep their mark and comment, and end", async () => {
  const store = SqliteFlowStore.open(":memory:");
  const { pending } = sampleFlows();
  const flow = pending as HttpFlow;
  delete flow.error;
  store.put(flow);
  assert.equal((await store.get(flow.id))!.live, true);
  assert.equal(await store.setMark(flow.id, true), true);
  assert.equal(await store.setComment(flow.id, "slow one"), true);
  assert.equal(await store.count("~q"), 1);
  flow.response = {
    status: 200,
    reason: "OK",
    httpVersion: "HTTP/1.1",
    headers: [["Content-Type", "application/rss+xml"]],
    body: { content: bytes("<rss/>"), size: 6, truncated: false },
    timestampStart: flow.timestampStart + 30,
  };
  flow.timestampEnd = flow.timestampStart + 40;
  store.end(flow);
  const stored = (await store.get(flow.id))!;
  assert.equal(stored.live, false);
  assert.equal(stored.marked, true);
  assert.equal(stored.comment, "slow one");
  assert.deepStrictEqual(stored.flow, { ...flow, marked: ":default:", comment: "slow one" });
  assert.equal(await store.count(), 1);
  assert.equal(await store.count("~q"), 0);
  assert.equal(await store.count("~c 200 & ~marked & ~comment slow"), 1);
  assert.equal(await store.setMark("missing", true), false);
  await store.close();
});

function fill(store: SqliteFlowStore, n: number): Flow[] {
  const flows: Flow[] = [];
  store.batch(() => {
    for (let i = 1; i <= n; i++) {
      const flow = syntheticFlow(i);
      flows.push(flow);
      store.end(flow);
    }
  });
  return flows;
}

Deno.test("store: queries select what the filter's predicate selects, in order, page by page", async () => {
  const store = SqliteFlowStore.open(":memory:");
  const flows = fill(store, 1200);
  for (const expression of ["~d example & ~m POST", "~c 404 | ~tcp", "~b 1\\d\\d\\}", "!~http", "~t png"]) {
    const filter = compileFilter(expression);
    const want = flows.filter((f) => filter.match(f)).map((f) => f.id);
    assert.ok(want.length > 10, `${expression} selects some (${want.length})`);
    // Oldest first, pages of 37, following the cursor.
    const got: string[] = [];
    let cursor: string | undefined;
    for (let pages = 0; pages < 1000; pages++) {
      const page = await store.query({
        filter: expression,
        limit: 37,
        ...(cursor !== undefined ? { after: cursor } : {}),
      });
      got.push(...page.flows.map((s) => s.flow.id));
      if (page.cursor === undefined) break;
      assert.equal(page.flows.length, 37);
      cursor = page.cursor;
    }
    assert.deepEqual(got, want, expression);
    assert.equal(await store.count(expression), want.length);
    // Newest first with `before`.
    const newest = await store.query({ filter: filter, limit: 5, newestFirst: true });
    assert.deepEqual(newest.flows.map((s) => s.flow.id), want.slice(-5).reverse());
    const older = await store.query({ filter, limit: 5, before: newest.cursor! });
    assert.deepEqual(older.flows.map((s) => s.flow.id), want.slice(-10, -5).reverse());
  }
  // A time window, and flows without bodies.
  const window = await store.query({ since: flows[99]!.timestampStart, until: flows[110]!.timestampStart });
  assert.deepEqual(window.flows.map((s) => s.flow.id), flows.slice(99, 110).map((f) => f.id));
  const bare = await store.query({ filter: "~m POST", limit: 1, withBodies: false });
  assert.equal((bare.flows[0]!.flow as HttpFlow).request.body.content.byteLength, 0);
  assert.ok((bare.flows[0]!.flow as HttpFlow).request.body.size > 0);
  await assert.rejects(store.query({ after: "1; DROP TABLE flows" }), RangeError);
  await store.close();
});

Deno.test("store: delete and clear", async () => {
  const store = SqliteFlowStore.open(":memory:");
  const flows = fill(store, 20);
  assert.equal(await store.delete([flows[0]!.id, flows[1]!.id, "missing"]), 2);
  assert.equal(await store.count(), 18);
  assert.equal(store.stats().flows, 18);
  assert.equal(await store.get(flows[0]!.id), undefined);
  await store.clear();
  assert.equal(await store.count(), 0);
  assert.deepEqual({ flows: store.stats().flows, bytes: store.stats().bytes }, { flows: 0, bytes: 0 });
  await store.close();
});

Deno.test("store: retention drops the oldest ended flows first and says so", async () => {
  await withDir(async (dir) => {
    const events: RetentionEvent[] = [];
    const maxBytes = 64 * 1024;
    const store = SqliteFlowStore.open(`${dir}/r.db`, { maxBytes, onRetention: (e) => events.push(e) });
    const live = syntheticFlow(0);
    delete live.timestampEnd;
    store.put(live);
    const flows: Flow[] = [];
    for (let i = 1; i <= 400; i++) {
      const flow = syntheticFlow(i, 1024);
      flows.push(flow);
      store.end(flow);
      assert.ok(store.stats().bytes <= maxBytes, `after ${i}: ${store.stats().bytes}`);
    }
    assert.ok(events.length > 0);
    assert.ok(events.every((e) => e.remainingBytes <= maxBytes && e.flows > 0 && e.maxBytes === maxBytes));
    const kept = (await store.query({ limit: 10_000 })).flows.map((s) => s.flow.id);
    // The live flow stays; the ended ones kept are the newest, without gaps.
    assert.equal(kept[0], live.id);
    const ended = kept.slice(1);
    assert.deepEqual(ended, flows.slice(-ended.length).map((f) => f.id));
    assert.ok(ended.length < 400);
    const stats = store.stats();
    assert.equal(stats.dropped, events.reduce((a, e) => a + e.flows, 0));
    assert.equal(stats.flows, kept.length);
    await store.close();
  });
});

Deno.test("store: a foreign, newer, or corrupt file is refused with the reason", async () => {
  await withDir((dir) => {
    const foreign = `${dir}/foreign.db`;
    const db = new DatabaseSync(foreign);
    db.exec("CREATE TABLE t (x)");
    db.close();
    assert.throws(
      () => SqliteFlowStore.open(foreign),
      (e) => e instanceof FlowStoreError && /not a wirescope/.test(e.message),
    );

    const newer = `${dir}/newer.db`;
    SqliteFlowStore.open(newer).closeSync();
    const raw = new DatabaseSync(newer);
    raw.exec(`PRAGMA user_version = ${SCHEMA_VERSION + 1}`);
    raw.close();
    assert.throws(
      () => SqliteFlowStore.open(newer, { readOnly: true }),
      (e) =>
        e instanceof FlowStoreError &&
        new RegExp(
          `newer wirescope \\(store schema ${
            SCHEMA_VERSION + 1
          }; this version reads up to ${SCHEMA_VERSION}\\)`,
        ).test(e.message),
    );

    const garbage = `${dir}/garbage.db`;
    Deno.writeTextFileSync(garbage, "this is not a database at all, just some text. ".repeat(200));
    assert.throws(
      () => SqliteFlowStore.open(garbage),
      (e) => e instanceof FlowStoreError && /garbage\.db/.test(e.message),
    );

    assert.throws(() => SqliteFlowStore.open(`${dir}/missing/x.db`), FlowStoreError);

    // A store cut short (a copy interrupted, a full disk): refused when opened, not misread later.
    const whole = `${dir}/whole.db`;
    const store = SqliteFlowStore.open(whole);
    fill(store, 300);
    store.closeSync();
    const truncated = `${dir}/truncated.db`;
    const data = Deno.readFileSync(whole);
    Deno.writeFileSync(truncated, data.subarray(0, data.byteLength >> 1));
    assert.throws(
      () => SqliteFlowStore.open(truncated, { readOnly: true }),
      (e) => e instanceof FlowStoreError && /truncated\.db: database disk image is malformed/.test(e.message),
    );
  });
});

Deno.test("store: a failed write is counted and reported, never thrown", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/ro.db`;
    SqliteFlowStore.open(path).closeSync();
    const errors: string[] = [];
    const store = SqliteFlowStore.open(path, { readOnly: true, onError: (e) => errors.push(e.message) });
    store.put(syntheticFlow(1));
    store.end(syntheticFlow(2));
    assert.equal(store.stats().writeErrors, 2);
    assert.equal(errors.length, 2);
    assert.match(errors[0]!, /read-only/);
    await store.close();
  });
});

/** Starts the writer process; resolves lines of its stdout as they come. */
function startWriter(path: string, count: number) {
  const child = new Deno.Command(DENO, {
    args: ["run", "-A", WRITER, path, String(count)],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  return {
    child,
    async nextLine(): Promise<string | undefined> {
      for (;;) {
        const nl = buffer.indexOf("\n");
        if (nl >= 0) {
          const line = buffer.slice(0, nl);
          buffer = buffer.slice(nl + 1);
          return line;
        }
        const { value, done } = await lines.read();
        if (done) return undefined;
        buffer += value;
      }
    },
    async drain(): Promise<void> {
      try {
        while (!(await lines.read()).done) { /* discard */ }
      } catch { /* closed */ }
      await child.stderr.cancel();
    },
  };
}

Deno.test("store: after SIGKILL mid-write, every flow that had ended is there", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/killed.db`;
    const writer = startWriter(path, 200_000);
    const ended: string[] = [];
    while (ended.length < 400) {
      const line = await writer.nextLine();
      assert.ok(line !== undefined, "the writer stopped early");
      if (line.startsWith("ended ")) ended.push(line.slice(6));
    }
    writer.child.kill("SIGKILL");
    const status = await writer.child.status;
    assert.equal(status.signal, "SIGKILL");
    await writer.drain();
    // Lines printed after the ones read above may exist too: they are in the store as well.
    const store = SqliteFlowStore.open(path);
    for (const id of ended) {
      const stored = store.getSync(id);
      assert.ok(stored, `flow ${id} ended before the kill and is missing`);
      assert.equal(stored.live, false);
    }
    const count = store.countSync();
    assert.ok(count >= ended.length);
    // At most one flow was in progress when the process died.
    const live = store.querySync({ limit: 10, newestFirst: true }).flows.filter((s) => s.live);
    assert.ok(live.length <= 1);
    // And the store takes more writes.
    store.end(syntheticFlow(999_999));
    assert.equal(store.stats().writeErrors, 0);
    store.closeSync();
  });
});

Deno.test("store: two readers query while another process writes", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/shared.db`;
    SqliteFlowStore.open(path).closeSync();
    const total = 3000;
    const writer = startWriter(path, total);
    const readers = [
      SqliteFlowStore.open(path, { readOnly: true }),
      SqliteFlowStore.open(path, { readOnly: true }),
    ];
    const last = [0, 0];
    let partial = 0;
    let rounds = 0;
    const started = Date.now();
    let done = false;
    const lines = (async () => {
      for (;;) {
        const line = await writer.nextLine();
        if (line === undefined || line === "done") break;
      }
      done = true;
    })();
    while (!done && Date.now() - started < 60_000) {
      for (let r = 0; r < readers.length; r++) {
        const reader = readers[r]!;
        const n = reader.countSync();
        assert.ok(n >= last[r]!, `reader ${r}: count went from ${last[r]} to ${n}`);
        last[r] = n;
        if (n > 0 && n < total) partial++;
        // What a reader sees is whole: every flow decodes, the filter's SQL and predicate agree.
        const page = reader.querySync({ filter: "~m POST | ~tcp", limit: 50, newestFirst: true });
        for (const s of page.flows) {
          assert.ok(s.flow.type === "tcp" || (s.flow.type === "http" && s.flow.request.method === "POST"));
        }
      }
      rounds++;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    await lines;
    assert.equal((await writer.child.status).code, 0);
    await writer.drain();
    assert.ok(rounds >= 5, `readers ran ${rounds} rounds while the writer wrote`);
    assert.ok(partial >= 2, `the readers saw the store while it grew (${partial} times)`);
    for (const reader of readers) {
      assert.equal(reader.countSync(), total);
      reader.closeSync();
    }
  });
});

Deno.test("store: bytes outside bodies and messages, and Buffers, still round-trip (the slow path)", async () => {
  await withDir(async (dir) => {
    const { Buffer } = await import("node:buffer");
    const odd = structuredClone(sampleFlows().get) as HttpFlow & { extra?: unknown };
    odd.id = "00000000-0000-4000-8000-0000000000ee";
    odd.extra = { raw: new Uint8Array([1, 2, 3]), none: new Uint8Array(0) };
    odd.response!.body.content = Buffer.from("a buffer body");
    const store = SqliteFlowStore.open(`${dir}/odd.db`);
    store.end(odd);
    const back = store.getSync(odd.id)!.flow as HttpFlow & { extra: { raw: Uint8Array; none: Uint8Array } };
    assert.deepEqual([...back.extra.raw], [1, 2, 3]);
    assert.ok(back.extra.none instanceof Uint8Array && back.extra.none.byteLength === 0);
    assert.equal(new TextDecoder().decode(back.response!.body.content), "a buffer body");
    store.closeSync();
  });
});
