import assert from "node:assert/strict";
import { byteStreamOfConn, type ConnLike } from "./byte_stream.ts";

/** A connection that delivers the given reads (sizes) and records the buffer each read was given. */
function scriptedConn(sizes: number[]): { conn: ConnLike; buffers: number[] } {
  const buffers: number[] = [];
  let next = 0;
  const conn: ConnLike = {
    read(p) {
      buffers.push(p.byteLength);
      const size = sizes[next++];
      if (size === undefined) return Promise.resolve(null);
      const n = Math.min(size, p.byteLength);
      p.fill(next & 0xff, 0, n);
      return Promise.resolve(n);
    },
    write: (p) => Promise.resolve(p.byteLength),
    closeWrite: () => Promise.resolve(),
    close: () => {},
    readable: new ReadableStream(),
  };
  return { conn, buffers };
}

Deno.test("byteStreamOfConn() reads a quiet connection into a small buffer, a busy one into a large one", async () => {
  // A request head, then a bulk transfer, then small messages again.
  const { conn, buffers } = scriptedConn([300, 4096, 65536, 65536, 20_000, 1000, 1000]);
  const stream = byteStreamOfConn(conn);
  const got: number[] = [];
  for (;;) {
    const chunk = await stream.read();
    if (chunk === null) break;
    got.push(chunk.byteLength);
    assert.ok(chunk.every((b) => b === chunk[0]), "each chunk holds its own read");
  }
  assert.deepEqual(got, [300, 4096, 65536, 65536, 20_000, 1000, 1000]);
  // A silent connection waits with 4 KiB, not 64 KiB: 3,000 of them held ~200 MB less.
  assert.deepEqual(buffers, [4096, 4096, 65536, 65536, 65536, 65536, 65536, 65536]);
});
