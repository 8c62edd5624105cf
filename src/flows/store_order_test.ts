import assert from "node:assert/strict";
import { type FlowOrderKey, SqliteFlowStore } from "./store.ts";
import { syntheticFlow } from "./testdata/flows.ts";
import type { Flow } from "./flow.ts";

function key(f: Flow, by: FlowOrderKey): string | number {
  const h = f.type === "http" ? f : undefined;
  switch (by) {
    case "time":
      return f.timestampStart;
    case "status":
      return h?.response?.status ?? 0;
    case "method":
      return h?.request.method ?? "";
    case "size":
      return h?.response?.body.size ?? 0;
    default:
      return 0;
  }
}

Deno.test("store: order by a column, pages by position, with a filter (exact and not)", async () => {
  const store = SqliteFlowStore.open(":memory:");
  const all = Array.from({ length: 300 }, (_, i) => syntheticFlow(i));
  for (const f of all) store.end(f);
  for (const by of ["status", "method", "size", "time"] as FlowOrderKey[]) {
    for (const descending of [false, true]) {
      for (const filter of [undefined, "~t json | ~m GET"]) {
        const seen: Flow[] = [];
        let after: string | undefined;
        for (let i = 0; i < 100; i++) {
          const page = await store.query({
            order: { by, descending },
            limit: 37,
            ...(filter ? { filter } : {}),
            ...(after ? { after } : {}),
          });
          seen.push(...page.flows.map((f) => f.flow));
          if (page.cursor === undefined) break;
          assert.match(page.cursor, /^@\d+$/);
          after = page.cursor;
        }
        const expected = filter ? (await store.query({ filter, limit: 10_000 })).flows.length : all.length;
        assert.equal(seen.length, expected, `${by} ${descending} ${filter}`);
        assert.equal(new Set(seen.map((f) => f.id)).size, seen.length, "no flow twice");
        for (let i = 1; i < seen.length; i++) {
          const a = key(seen[i - 1]!, by), b = key(seen[i]!, by);
          assert.ok(descending ? a >= b : a <= b, `${by} ${descending}: ${a} then ${b}`);
        }
      }
    }
  }
  await assert.rejects(store.query({ order: { by: "nope" as FlowOrderKey } }), /cannot sort by/);
  await assert.rejects(store.query({ order: { by: "time" }, after: "12" }), /bad after cursor/);
  await store.close();
});
