/** Packing rows for the store's worker: exact round trips, separators in the data, marks, damage. */
import assert from "node:assert/strict";
import type { HttpFlow } from "./flow.ts";
import { RowPacker, unpackRows } from "./row_pack.ts";
import { flowRow } from "./store.ts";
import { sampleFlows } from "./testdata/flows.ts";

Deno.test("row pack: rows of every flow type come back as flowRow made them", () => {
  const flows = Object.values(sampleFlows());
  // Control characters and the separators themselves in the text columns and the JSON.
  const odd = structuredClone(flows.find((f) => f.type === "http")!) as HttpFlow;
  odd.id = "00000000-0000-4000-8000-00000000abcd";
  odd.request.path = "/\u0001\u0002\u0000é😀";
  odd.request.url = `https://example.com${odd.request.path}`;
  odd.request.headers = [["x-odd", "\ud800 lone"]];
  odd.error = { message: "", timestamp: 1 };
  odd.marked = ":default:";
  odd.comment = "a comment ✓";
  flows.push(odd);
  const packer = new RowPacker();
  const rows = flows.map((f, i) => flowRow(f, i % 2 === 0));
  for (const row of rows) packer.add(row);
  assert.equal(packer.count, rows.length);
  const packed = packer.take();
  assert.equal(packer.count, 0);
  const back = unpackRows(structuredClone(packed));
  assert.equal(back.length, rows.length);
  for (let i = 0; i < rows.length; i++) {
    const a = rows[i]!, b = back[i]!;
    assert.deepStrictEqual(b.flow, a.flow);
    assert.equal(b.ended, a.ended);
    assert.deepStrictEqual(b.c, a.c);
    assert.equal(b.encoded.json, a.encoded.json);
    assert.equal(b.encoded.cut, a.encoded.cut);
    assert.deepStrictEqual(b.encoded.blobs.map((x) => [...x]), a.encoded.blobs.map((x) => [...x]));
    assert.equal(b.mark, a.mark);
    assert.equal(b.comment, a.comment);
  }
  const last = back.at(-1)!;
  assert.equal(last.flow.error?.message, "", "an error with no message is still an error");
  assert.equal(last.mark, ":default:");
  assert.equal(last.comment, "a comment ✓");
  assert.deepEqual(unpackRows(new RowPacker().take()), []);
});

Deno.test("row pack: a damaged batch is refused with an error, not written wrong", () => {
  const packer = new RowPacker();
  for (const f of Object.values(sampleFlows())) packer.add(flowRow(f, true));
  const packed = packer.take();
  assert.throws(() => unpackRows({ ...packed, bytes: packed.bytes.slice(0, 3) }), /cut short/);
  assert.throws(() => unpackRows({ ...packed, count: packed.count + 1 }), /fewer rows/);
  assert.throws(() => unpackRows({ ...packed, text: "x" }), /separator/);
});
