import assert from "node:assert/strict";
import { DatagramRing } from "./datagram_ring.ts";

const ep = (n: number) => new Uint8Array(18).fill(n);

Deno.test("DatagramRing carries datagrams in order across its wrap-around", () => {
  const ring = new DatagramRing(256);
  const seen: number[][] = [];
  for (let round = 0; round < 50; round++) {
    const a = new Uint8Array(round % 60).fill(round);
    assert.equal(ring.push(ep(round), a), true);
    ring.drain((e, d) => seen.push([e[0]!, d.length, d[0] ?? -1]));
  }
  assert.deepEqual(seen, Array.from({ length: 50 }, (_, r) => [r, r % 60, r % 60 ? r : -1]));
});

Deno.test("DatagramRing drops and counts what does not fit, and a second view shares it", () => {
  const ring = new DatagramRing(256);
  const other = new DatagramRing(ring.buffer);
  for (const n of [1, 2, 3]) assert.equal(ring.push(ep(n), new Uint8Array(50)), true);
  assert.equal(ring.push(ep(9), new Uint8Array(50)), false);
  assert.equal(other.dropped, 1);
  const got: number[] = [];
  assert.equal(other.drain((e) => got.push(e[0]!)), 3);
  assert.deepEqual(got, [1, 2, 3]);
  assert.equal(ring.push(ep(4), new Uint8Array(100)), true, "space is free again");
});
