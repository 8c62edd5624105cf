/**
 * Store schema 3 (fewer indexes) against a schema-2 file: read as it is read-only, migrated in
 * place when opened writable, filters answering the same either way; and the time-ordered flow ids.
 * @module
 */
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { compileFilter } from "./filter.ts";
import type { Flow } from "./flow.ts";
import { newFlowId } from "./flow_id.ts";
import { SCHEMA_VERSION, SqliteFlowStore } from "./store.ts";
import { syntheticFlow } from "./testdata/flows.ts";

async function withDir<T>(fn: (dir: string) => Promise<T> | T): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "wirescope-schema-" });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** The indexes schema 2 had on `flows` beside the id's, the host's, the time's and the marked one. */
const SCHEMA2_INDEXES = `
CREATE INDEX flows_status ON flows (status);
CREATE INDEX flows_peer ON flows (peer);`;

/** A store as schema 2 wrote it (the same tables; schema 3 differs in its indexes only). */
function makeSchema2(path: string, flows: Flow[]): void {
  const store = SqliteFlowStore.open(path);
  store.batch(() => flows.forEach((f) => store.end(f)));
  store.closeSync();
  const db = new DatabaseSync(path);
  db.exec(`DROP INDEX flows_kind; ${SCHEMA2_INDEXES}`);
  db.prepare("UPDATE flows SET mark = 'old', marked = 1 WHERE id = ?").run(flows[3]!.id);
  db.exec("PRAGMA user_version = 2");
  db.close();
}

function fileState(path: string): { version: number; indexes: string[] } {
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    const version = Number(
      (db.prepare("PRAGMA user_version").get() as { user_version: number }).user_version,
    );
    const indexes = (db.prepare(
      "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'flows' AND sql IS NOT NULL ORDER BY name",
    ).all() as { name: string }[]).map((r) => r.name);
    return { version, indexes };
  } finally {
    db.close();
  }
}

const EXPRESSIONS = ["~c 404", "~m POST", "~http", "~tcp", "~d example & ~m GET", "!~c 200", "~q", "~marked"];

/** Ids matching each expression in the store, and by the filter's predicate over the flows. */
async function checkFilters(store: SqliteFlowStore, flows: Flow[], marked: string): Promise<void> {
  for (const expression of EXPRESSIONS) {
    const filter = compileFilter(expression);
    const stored = (await store.query({ filter, limit: 10_000 })).flows.map((s) => s.flow.id);
    const expected = flows.filter((f) => filter.match(f, { marked: f.id === marked })).map((f) => f.id);
    assert.deepEqual(stored, expected, expression);
    assert.equal(await store.count(filter), expected.length, expression);
  }
}

Deno.test("schema: a schema-2 store is read as it is read-only and migrated to schema 3 when opened writable", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/v2.db`;
    const flows = Array.from({ length: 400 }, (_, i) => syntheticFlow(i + 1));
    makeSchema2(path, flows);
    const before = fileState(path);
    assert.equal(before.version, 2);
    assert.ok(before.indexes.includes("flows_status") && !before.indexes.includes("flows_kind"));

    const reader = SqliteFlowStore.open(path, { readOnly: true });
    assert.equal(reader.stats().flows, 400);
    await checkFilters(reader, flows, flows[3]!.id);
    assert.equal((await reader.get(flows[3]!.id))!.mark, "old");
    reader.closeSync();
    assert.deepEqual(fileState(path), before);

    const store = SqliteFlowStore.open(path);
    const after = fileState(path);
    assert.equal(after.version, SCHEMA_VERSION);
    assert.equal(SCHEMA_VERSION, 3);
    assert.deepEqual(after.indexes, [
      "flows_host",
      "flows_host_alt",
      "flows_kind",
      "flows_marked",
      "flows_method",
      "flows_ts_start",
      "flows_type",
    ]);
    await checkFilters(store, flows, flows[3]!.id);
    const more = syntheticFlow(401);
    store.end(more);
    await store.close();

    // A new store has the same indexes as a migrated one; opening the migrated one again changes nothing.
    SqliteFlowStore.open(`${dir}/new.db`).closeSync();
    assert.deepEqual(fileState(`${dir}/new.db`), after);
    const again = SqliteFlowStore.open(path);
    assert.equal(again.stats().flows, 401);
    await checkFilters(again, [...flows, more], flows[3]!.id);
    await again.close();
    assert.deepEqual(fileState(path), after);
  });
});

Deno.test("schema: the SQL of the indexed filters uses an index, not a scan of the flows table", async () => {
  await withDir((dir) => {
    const store = SqliteFlowStore.open(`${dir}/plan.db`);
    for (const expression of ["~c 404", "~http", "~d example", "~m POST", "~d example & ~m POST"]) {
      const sql = compileFilter(expression).toSql();
      const plan = (store.database.prepare(`EXPLAIN QUERY PLAN SELECT count(*) FROM flows WHERE ${sql.sql}`)
        .all(...sql.params) as { detail: string }[]).map((r) => r.detail).join("; ");
      assert.match(plan, /INDEX/, `${expression}: ${plan}`);
      assert.doesNotMatch(plan, /SCAN flows(?! USING)/, `${expression}: ${plan}`);
    }
    store.closeSync();
  });
});

Deno.test("flow ids: version 7 UUIDs, increasing, also within one millisecond and past 4,096 of them", () => {
  const ids: string[] = [];
  for (let i = 0; i < 5000; i++) ids.push(newFlowId(1_800_000_000_000));
  ids.push(newFlowId(1_800_000_000_001), newFlowId(Date.now()));
  for (const id of ids) {
    assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  }
  for (let i = 1; i < ids.length; i++) assert.ok(ids[i - 1]! < ids[i]!, `${ids[i - 1]} < ${ids[i]}`);
  assert.equal(new Set(ids).size, ids.length);
  // The first 48 bits are the milliseconds.
  assert.equal(parseInt(ids[0]!.slice(0, 8) + ids[0]!.slice(9, 13), 16), 1_800_000_000_000);
});
