/**
 * Marks and comments in the flow store: named and plain marks, `~marked`, `~marker` and
 * `~comment` answered by SQL and by the predicate alike, flows that carry their mark into a
 * store, the worker store, `query(expression)`, a schema-1 store (the first wirescope's)
 * migrated when opened writable and read as it is when opened read-only, and marks and comments
 * kept through HAR and JSON lines.
 */
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import type { Flow } from "./flow.ts";
import { compileFilter } from "./filter.ts";
import { type FlowStore, FlowStoreError, SCHEMA_VERSION, SqliteFlowStore } from "./store.ts";
import { WorkerFlowStore } from "./worker_store.ts";
import { exportFlows } from "./export.ts";
import { openFlowFile } from "./flow_file.ts";
import { syntheticFlow } from "./testdata/flows.ts";

async function withDir<T>(fn: (dir: string) => Promise<T> | T): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "wirescope-marks-" });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function ids(store: FlowStore, expression: string): Promise<string[]> {
  return (await store.query({ filter: expression, limit: 10_000 })).flows.map((s) => s.flow.id);
}

/** Marks and comments 1..40 the same way on any store; returns the flows by number. */
async function annotate(store: FlowStore, flows: Flow[]): Promise<void> {
  assert.equal(await store.setMark(flows[1]!.id, true), true);
  assert.equal(await store.setMark(flows[2]!.id, ":red_circle:"), true);
  assert.equal(await store.setMark(flows[3]!.id, "later"), true);
  assert.equal(await store.setMark(flows[3]!.id, false), true); // unmarked again
  assert.equal(await store.setComment(flows[4]!.id, "Slow Login\nsecond line"), true);
  assert.equal(await store.setComment(flows[2]!.id, "token leak"), true);
  assert.equal(await store.setMark("no-such-flow", true), false);
  assert.equal(await store.setComment("no-such-flow", "x"), false);
}

async function checkAnnotations(store: FlowStore, flows: Flow[]): Promise<void> {
  const [, one, two, three, four] = flows.map((f) => f.id);
  assert.deepEqual(await ids(store, "~marked"), [one, two]);
  assert.deepEqual(
    await ids(store, "!~marked & ~all"),
    flows.map((f) => f.id).filter((id) => id !== one && id !== two),
  );
  assert.deepEqual(await ids(store, "~marker :default:"), [one]);
  assert.deepEqual(await ids(store, "~marker red"), [two]);
  assert.deepEqual(await ids(store, "~marker ^:red_.*:$"), [two]); // a regex: the predicate decides
  assert.deepEqual(await ids(store, "~comment slow"), [four]);
  assert.deepEqual(await ids(store, "~comment ^second"), [four]); // multiline, as mitmproxy
  assert.deepEqual(await ids(store, "~comment leak|login"), [two, four]);
  // Mixed with a part only the predicate can answer: the annotations reach it.
  assert.deepEqual(
    await ids(store, "~marked & ~h synthetic"),
    [one, two].filter((id) => {
      const f = flows.find((x) => x.id === id)!;
      return f.type === "http";
    }),
  );
  const got = (await store.get(two!))!;
  assert.equal(got.marked, true);
  assert.equal(got.mark, ":red_circle:");
  assert.equal(got.comment, "token leak");
  assert.equal(got.flow.marked, ":red_circle:");
  assert.equal(got.flow.comment, "token leak");
  const plain = (await store.get(three!))!;
  assert.equal(plain.marked, false);
  assert.equal(plain.mark, "");
  assert.equal("marked" in plain.flow, false);
  // query(expression) is the short form of query({ filter }).
  assert.deepEqual((await store.query("~marked")).flows.map((s) => s.flow.id), [one, two]);
  assert.equal(await store.count("~marked | ~comment ."), 3);
}

Deno.test("marks: named and plain marks and comments answer ~marked, ~marker and ~comment", async () => {
  const store = SqliteFlowStore.open(":memory:");
  const flows = Array.from({ length: 40 }, (_, i) => syntheticFlow(i + 1));
  store.batch(() => flows.forEach((f) => store.end(f)));
  await annotate(store, flows);
  await checkAnnotations(store, flows);
  // A flow ending again (a live flow's last write) keeps what the user set.
  store.end(flows[2]!);
  assert.equal((await store.get(flows[2]!.id))!.mark, ":red_circle:");
  // SQL and predicate agree on every flow.
  for (const expr of ["~marked", "~marker red", "~comment slow", "!~marked", "~marked | ~comment leak"]) {
    const filter = compileFilter(expr);
    assert.equal(filter.toSql().exact, true, expr);
    const viaSql = await ids(store, expr);
    const viaPredicate = [];
    for (const f of flows) {
      const s = (await store.get(f.id))!;
      if (filter.match(s.flow)) viaPredicate.push(f.id);
    }
    assert.deepEqual(viaSql, viaPredicate, expr);
  }
  await store.close();
});

Deno.test("marks: a flow that carries a mark and comment (read from a file) is stored with them", async () => {
  const store = SqliteFlowStore.open(":memory:");
  const flow = { ...syntheticFlow(7), marked: ":star:", comment: "from the old run" };
  store.end(flow);
  store.end(syntheticFlow(8));
  const got = (await store.get(flow.id))!;
  assert.equal(got.mark, ":star:");
  assert.equal(got.comment, "from the old run");
  assert.deepEqual(await ids(store, "~marked"), [flow.id]);
  assert.deepEqual(await ids(store, "~comment old"), [flow.id]);
  // What the user sets later wins over what the JSON of the flow says.
  await store.setMark(flow.id, false);
  await store.setComment(flow.id, "");
  const after = (await store.get(flow.id))!;
  assert.equal("marked" in after.flow, false);
  assert.equal("comment" in after.flow, false);
  assert.deepEqual(await ids(store, "~marked"), []);
  await store.close();
});

Deno.test("marks: the worker store sets them after what it has queued is committed", async () => {
  await withDir(async (dir) => {
    const store = await WorkerFlowStore.open(`${dir}/w.db`);
    const flows = Array.from({ length: 40 }, (_, i) => syntheticFlow(i + 1));
    store.batch(() => flows.forEach((f) => store.end(f)));
    // Not awaited: the marks must still find the flows queued just before.
    await annotate(store, flows);
    await checkAnnotations(store, flows);
    await store.close();
    const again = SqliteFlowStore.open(`${dir}/w.db`, { readOnly: true });
    await checkAnnotations(again, flows);
    again.closeSync();
  });
});

/** Makes a store as the first wirescope wrote it: schema 1, no `mark` column, marks 0/1. */
function makeSchema1(path: string, flows: Flow[]): void {
  const store = SqliteFlowStore.open(path);
  store.batch(() => flows.forEach((f) => store.end(f)));
  store.closeSync();
  const db = new DatabaseSync(path);
  db.exec("ALTER TABLE flows DROP COLUMN mark");
  db.prepare("UPDATE flows SET marked = 1 WHERE id = ?").run(flows[1]!.id);
  db.prepare("UPDATE flows SET comment = 'old note' WHERE id = ?").run(flows[2]!.id);
  db.exec("PRAGMA user_version = 1");
  db.close();
}

function userVersion(path: string): number {
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    return Number((db.prepare("PRAGMA user_version").get() as { user_version: number }).user_version);
  } finally {
    db.close();
  }
}

function columns(path: string): string[] {
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    return (db.prepare("PRAGMA table_info(flows)").all() as { name: string }[]).map((c) => c.name);
  } finally {
    db.close();
  }
}

Deno.test("marks: a schema-1 store is read as it is read-only and migrated when opened writable", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/old.db`;
    const flows = Array.from({ length: 30 }, (_, i) => syntheticFlow(i + 1));
    makeSchema1(path, flows);
    assert.equal(userVersion(path), 1);
    assert.equal(columns(path).includes("mark"), false);

    // Read-only (`-r old.db`): the file is left alone; its marks read as plain marks.
    const reader = SqliteFlowStore.open(path, { readOnly: true });
    assert.deepEqual(await ids(reader, "~marked"), [flows[1]!.id]);
    assert.deepEqual(await ids(reader, "~marker :default:"), [flows[1]!.id]);
    assert.deepEqual(await ids(reader, "~comment note"), [flows[2]!.id]);
    assert.equal((await reader.get(flows[1]!.id))!.flow.marked, ":default:");
    assert.equal((await reader.query({ limit: 1000 })).flows.length, 30);
    reader.closeSync();
    assert.equal(userVersion(path), 1);

    // Writable: migrated in place, flows and annotations kept, and it takes named marks.
    const store = SqliteFlowStore.open(path);
    assert.equal(userVersion(path), SCHEMA_VERSION);
    assert.equal(columns(path).includes("mark"), true);
    assert.equal(store.stats().flows, 30);
    assert.deepEqual(await ids(store, "~marker ^:default:$"), [flows[1]!.id]);
    assert.deepEqual(await ids(store, "~comment note"), [flows[2]!.id]);
    await store.setMark(flows[5]!.id, "new");
    store.end(syntheticFlow(31));
    assert.deepEqual(await ids(store, "~marked"), [flows[1]!.id, flows[5]!.id]);
    await store.close();
    // Opening it again finds the current schema and changes nothing.
    const again = SqliteFlowStore.open(path);
    assert.equal(again.stats().flows, 31);
    assert.deepEqual(await ids(again, "~marker new"), [flows[5]!.id]);
    await again.close();
  });
});

Deno.test("marks: a store below schema 1 is refused with the reason", async () => {
  await withDir((dir) => {
    const path = `${dir}/zero.db`;
    SqliteFlowStore.open(path).closeSync();
    const db = new DatabaseSync(path);
    db.exec("PRAGMA user_version = 0");
    db.close();
    for (const readOnly of [true, false]) {
      assert.throws(
        () => SqliteFlowStore.open(path, { readOnly }),
        (e) =>
          e instanceof FlowStoreError &&
          /zero\.db has store schema 0, which this version cannot read/.test(e.message),
      );
    }
  });
});

Deno.test("marks: HAR and JSON lines keep a flow's mark and comment, and -r reads them back for ~marked", async () => {
  await withDir(async (dir) => {
    const store = SqliteFlowStore.open(`${dir}/s.db`);
    const flows = Array.from({ length: 30 }, (_, i) => syntheticFlow(i + 1));
    store.batch(() => flows.forEach((f) => store.end(f)));
    await annotate(store, flows);
    const stored = (await store.query({ limit: 1000 })).flows.map((s) => s.flow);
    await store.close();
    for (const format of ["jsonl", "har"] as const) {
      const path = `${dir}/out.${format}`;
      const file = await Deno.open(path, { write: true, create: true, truncate: true });
      await exportFlows(stored, format, async (chunk) => {
        let done = 0;
        while (done < chunk.byteLength) done += await file.write(chunk.subarray(done));
      });
      file.close();
      const back = await openFlowFile(path);
      const marked: string[] = [];
      for await (const f of back.flows(compileFilter("~marked"))) marked.push(`${f.id} ${f.marked}`);
      const commented: string[] = [];
      for await (const f of back.flows(compileFilter("~comment ."))) commented.push(`${f.id} ${f.comment}`);
      back.close();
      const expect = (pick: (f: Flow) => string | undefined) =>
        stored.filter((f) => pick(f) && (format === "jsonl" || f.type === "http")).map((f) =>
          `${f.id} ${pick(f)}`
        );
      assert.deepEqual(marked, expect((f) => f.marked), format);
      assert.deepEqual(commented, expect((f) => f.comment), format);
    }
  });
});
